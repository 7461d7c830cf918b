"""`imsso profile check`: a profile through its schema and rendered at its min, default and max sizes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imsso import cli
from imsso.profiles import BUILTIN_DIR

runner = CliRunner()


def check(target: str):
    return runner.invoke(cli.app, ["profile", "check", target])


@pytest.mark.parametrize("name", ["sip-core", "ims"])
def test_the_builtin_profiles_pass_by_name_and_by_folder(name: str):
    for target in (name, str(BUILTIN_DIR / name)):
        result = check(target)
        assert result.exit_code == 0, result.output
        assert f"{name}: valid" in result.output
        assert "rendered at the max sizes" in result.output and "scscf 5" in result.output


def test_a_copy_with_four_typos_fails_naming_every_one(tmp_path: Path):
    folder = tmp_path / "sip-core"
    shutil.copytree(BUILTIN_DIR / "sip-core", folder)
    text = (folder / "profile.yaml").read_text()
    for old, new in (
        ("program: dns", "program: bind9"),
        ("probe: sip-options", "probe: dnss"),
        ("routable: true", "routeable: true"),
        ("{dmq-peers.cfg: at-start}", "{dmq-peers.cfg: at_start}"),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    (folder / "profile.yaml").write_text(text)
    result = check(str(folder))
    assert result.exit_code == 1
    for needle in (
        "roles.dns.program: 'bind9' is not a program",
        "roles.pcscf.probe: 'dnss' is not a probe of kamailio",
        "roles.scscf.routeable: unknown key (did you mean 'routable'?)",
        "roles.scscf.reload.dmq-peers.cfg: 'at_start' is not a reload method of kamailio",
    ):
        assert needle in result.output
    assert str(folder / "profile.yaml") in result.output


def test_a_template_error_names_the_template_and_the_size(tmp_path: Path):
    folder = tmp_path / "sip-core"
    shutil.copytree(BUILTIN_DIR / "sip-core", folder)
    dmq = folder / "templates" / "dmq-peers.cfg.j2"
    # fails only where an S-CSCF has peers: at the max sizes (5 S-CSCFs), not at min or default
    dmq.write_text(dmq.read_text() + "{% if peers %}{{ no_such_name }}{% endif %}\n")
    result = check(str(folder))
    assert result.exit_code == 1
    (line,) = [ln for ln in result.output.splitlines() if "no_such_name" in ln]
    assert line.startswith(f"{dmq}: at the max sizes (dns 1, pcscf 1, scscf 5), unit scscf-1 file dmq-peers.cfg:")
    assert "UndefinedError: 'no_such_name' is undefined" in line


def test_a_template_syntax_error_is_reported_with_its_line(tmp_path: Path):
    folder = tmp_path / "sip-core"
    shutil.copytree(BUILTIN_DIR / "sip-core", folder)
    (folder / "templates" / "zone.json.j2").write_text("{\n{% if %}\n")
    result = check(str(folder))
    assert result.exit_code == 1
    assert "zone.json.j2: at the min sizes" in result.output and "TemplateSyntaxError (line 2)" in result.output


def test_neither_a_folder_nor_a_profile_name(tmp_path: Path):
    result = check(str(tmp_path / "nothing"))
    assert result.exit_code == 1
    assert "neither a profile folder" in result.output
