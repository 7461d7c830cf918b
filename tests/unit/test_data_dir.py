"""The data folder is private from its first creation, and a folder others may write is refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from imsso.auth import LocalTokens
from imsso.config import Settings, private_dir
from imsso.model import InvalidInput
from imsso.server import Orchestrator
from imsso.store import Store


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_folder_and_the_parents_it_makes_are_0700_whatever_the_umask(tmp_path: Path):
    old = os.umask(0o000)  # the loosest umask: nothing may depend on it
    try:
        made = private_dir(tmp_path / "a" / "b" / "data")
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert _mode(folder) == 0o700, folder
    assert _mode(tmp_path) == stat.S_IMODE(os.stat(tmp_path).st_mode)  # what existed is left alone


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777, 0o1777])
def test_a_folder_others_may_write_is_refused_with_the_fix(tmp_path: Path, mode: int):
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, mode)
    with pytest.raises(InvalidInput) as err:
        private_dir(folder)
    assert "writable by its group or by others" in err.value.message
    assert f"chmod go-w {folder}" in err.value.message


def test_the_orchestrator_refuses_to_start_on_such_a_folder(tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(InvalidInput) as err:
        Orchestrator(Settings(data_dir=folder, runtime_interval=0))
    assert str(folder) in err.value.message
    assert not (folder / "imsso.sqlite").exists()  # refused before anything was written


def test_the_admin_token_folder_is_made_private(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'imsso.db'}")
    store.migrate()
    tokens = LocalTokens(store, tmp_path / "new" / "data" / "admin.token", 60)
    tokens.admin_token()
    assert _mode(tmp_path / "new") == _mode(tmp_path / "new" / "data") == 0o700
    assert _mode(tokens.admin_token_file) == 0o600
    store.close()
