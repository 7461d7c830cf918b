"""profile.yaml is checked when it is read: unknown keys, wrong types and values the programs do
not declare are refused, every problem at once, each naming the file and the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from imsso import profiles, programs
from imsso.model import InvalidInput
from imsso.profiles import BUILTIN_DIR, ProfileError, ProfileRegistry, schema


def sip_core_raw() -> dict:
    return yaml.safe_load((BUILTIN_DIR / "sip-core" / "profile.yaml").read_text())


def templates() -> set[str]:
    return {p.name for p in (BUILTIN_DIR / "sip-core" / "templates").iterdir()}


def problems(raw: dict) -> list[str]:
    return schema.check(raw, templates(), programs.registry())


def test_the_builtin_profiles_load_and_pass_the_schema():
    for name in ("sip-core", "ims"):
        prof = ProfileRegistry().load(name)
        assert prof.name == name and prof.entry in prof.roles
        raw = yaml.safe_load((BUILTIN_DIR / name / "profile.yaml").read_text())
        assert schema.check(raw, prof.templates, programs.registry()) == []


def test_a_program_that_does_not_exist_is_refused():
    raw = sip_core_raw()
    raw["roles"]["dns"]["program"] = "bind9"
    assert "roles.dns.program: 'bind9' is not a program (known: dns, hss, kamailio)" in problems(raw)


def test_a_probe_the_program_does_not_declare_is_refused():
    raw = sip_core_raw()
    raw["roles"]["dns"]["probe"] = "dnss"
    found = problems(raw)
    assert len(found) == 1 and found[0].startswith("roles.dns.probe: 'dnss' is not a probe of dns (known: dns")


def test_a_misspelt_key_is_refused_with_a_suggestion():
    raw = sip_core_raw()
    raw["roles"]["scscf"]["routeable"] = raw["roles"]["scscf"].pop("routable")
    assert problems(raw) == ["roles.scscf.routeable: unknown key (did you mean 'routable'?)"]


def test_a_reload_method_the_program_does_not_declare_is_refused():
    raw = sip_core_raw()
    raw["roles"]["scscf"]["reload"] = {"dmq-peers.cfg": "at_start"}
    (found,) = problems(raw)
    assert found.startswith("roles.scscf.reload.dmq-peers.cfg: 'at_start' is not a reload method of kamailio")
    assert "did you mean 'at-start'?" in found


@pytest.mark.parametrize(
    "where, key",
    [
        ((), "colour"),
        (("roles", "pcscf"), "colour"),
        (("roles", "pcscf", "sizes"), "colour"),
        (("roles", "pcscf", "ports", 0), "colour"),
        (("policies", 0), "colour"),
        (("roles", "scscf", "on_leave"), "colour"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(where, key):
    raw = sip_core_raw()
    node = raw
    for step in where:
        node = node[step]
    node[key] = 1
    path = ".".join(str(s) for s in where if not isinstance(s, int))
    found = problems(raw)
    assert len(found) == 1 and "colour: unknown key (accepted: " in found[0]
    assert found[0].replace("[0]", "").startswith(f"{path}.colour" if path else "colour")


def pcscf(r: dict) -> dict:
    return r["roles"]["pcscf"]


def scscf(r: dict) -> dict:
    return r["roles"]["scscf"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda r: scscf(r)["sizes"].update(min=3, default=2), "roles.scscf.sizes: min 3 <= default 2"),
        (lambda r: scscf(r)["sizes"].update(max="five"), "roles.scscf.sizes.max: 'five' is not an integer"),
        (
            lambda r: pcscf(r)["ports"][0].update(port=70000),
            "roles.pcscf.ports[0].port: 70000 is not an integer from 1 to 65535",
        ),
        (
            lambda r: pcscf(r)["ports"][0].update(protocol="sctp"),
            "roles.pcscf.ports[0].protocol: 'sctp' is not a protocol (known: tcp, udp",
        ),
        (lambda r: pcscf(r).update(shm_mb=0), "roles.pcscf.shm_mb: 0 is not an integer of at least 1"),
        (lambda r: pcscf(r).update(children=-2), "roles.pcscf.children: -2 is not an integer of at least 1"),
        (lambda r: pcscf(r).update(routable="yes"), "roles.pcscf.routable: 'yes' is not true or false"),
        (lambda r: r.update(entry="icscf"), "entry: 'icscf' is not a role (known: dns, pcscf, scscf"),
        (
            lambda r: r.update(order=["scscf", "pcscf", "dsn"]),
            "order[2]: 'dsn' is not a role (known: dns, pcscf, scscf; did you mean 'dns'?)",
        ),
        (lambda r: r.update(order=["scscf", "pcscf"]), "order: lacks dns"),
        (
            lambda r: pcscf(r)["files"].update({"kamailio.cfg": "pcsf.cfg.j2"}),
            "roles.pcscf.files.kamailio.cfg: 'pcsf.cfg.j2' is not a template of the profile",
        ),
        (
            lambda r: pcscf(r)["files"].update({"../escape": "pcscf.cfg.j2"}),
            "roles.pcscf.files.../escape: '../escape' is not a plain file name",
        ),
        (
            lambda r: pcscf(r).update(reload={"nothere.cfg": "dispatcher.reload"}),
            "roles.pcscf.reload.nothere.cfg: 'nothere.cfg' is not a file of the role",
        ),
        (
            lambda r: scscf(r)["on_leave"].update(rpc="dmq.rm"),
            "roles.scscf.on_leave.rpc: 'dmq.rm' is not a call of kamailio",
        ),
        (
            lambda r: r["policies"][0].update(aggregate="median"),
            "policies[0]: policy scscf-out: aggregate must be one of",
        ),
        (lambda r: r["policies"][0].update(role="icscf"), "policies[0]: policy scscf-out: unknown role icscf"),
        (lambda r: r.update(auth=["digest", "sha"]), "auth[1]: 'sha' is not an authentication method"),
        (lambda r: r.pop("domain"), "domain: missing (required)"),
        (lambda r: r["roles"]["dns"].pop("probe"), "roles.dns.probe: missing (required)"),
    ],
)
def test_types_ranges_and_references_are_checked(change, expected):
    raw = sip_core_raw()
    change(raw)
    found = problems(raw)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once_naming_the_file(tmp_path: Path):
    folder = tmp_path / "sip-core"
    shutil.copytree(BUILTIN_DIR / "sip-core", folder)
    raw = sip_core_raw()
    raw["roles"]["dns"]["program"] = "bind9"
    raw["roles"]["pcscf"]["probe"] = "dnss"
    raw["roles"]["scscf"]["routeable"] = raw["roles"]["scscf"].pop("routable")
    raw["roles"]["scscf"]["reload"] = {"dmq-peers.cfg": "at_start"}
    raw["colour"] = "blue"
    (folder / "profile.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError) as refused:
        ProfileRegistry([tmp_path]).load("sip-core")
    assert isinstance(refused.value, InvalidInput)
    assert len(refused.value.problems) == 5
    assert all(p.startswith(f"{folder / 'profile.yaml'}: ") for p in refused.value.problems)
    for needle in (
        "roles.dns.program: 'bind9'",
        "roles.pcscf.probe: 'dnss'",
        "roles.scscf.routeable: unknown key",
        "roles.scscf.reload.dmq-peers.cfg: 'at_start'",
        "colour: unknown key",
    ):
        assert needle in str(refused.value)


def test_a_profile_named_unlike_its_folder_is_refused(tmp_path: Path):
    shutil.copytree(BUILTIN_DIR / "sip-core", tmp_path / "mine")
    with pytest.raises(ProfileError, match="name: 'sip-core' differs from its folder's name 'mine'"):
        profiles.read(tmp_path / "mine")


def test_a_registry_reads_its_own_folders_first_and_once(tmp_path: Path):
    shutil.copytree(BUILTIN_DIR / "sip-core", tmp_path / "sip-core")
    raw = sip_core_raw()
    raw["description"] = "the operator's own"
    (tmp_path / "sip-core" / "profile.yaml").write_text(yaml.safe_dump(raw))
    registry = ProfileRegistry([tmp_path, BUILTIN_DIR])
    assert registry.available() == ["ims", "sip-core"]
    assert registry.load("sip-core").description == "the operator's own"
    assert registry.load("sip-core") is registry.load("sip-core")
    assert ProfileRegistry().load("sip-core").description != "the operator's own"


def test_the_module_level_load_still_serves_the_builtin_profiles():
    assert profiles.load("sip-core") is profiles.default_registry().load("sip-core")
    assert profiles.available() == ["ims", "sip-core"]
