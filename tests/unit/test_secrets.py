"""Subscribers' secrets at rest: sealed in the database with a key kept in a file outside it, a
password kept as HA1 only where the profile checks digest against HA1, a rotation that leaves
one key, and clear errors when the key file is wrong or gone. The store tests run on SQLite and
PostgreSQL (the `store` fixture)."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from typer.testing import CliRunner

from imsso import cli, profiles
from imsso.config import Settings
from imsso.model import Instance, InvalidInput, Subscriber
from imsso.store import Store
from imsso.vault import Vault, VaultError, ha1_pair

K, OPC = "465b5ce8b199b49faa5f0a2ee238a6bc", "cd63cb71954a9f4e48a5994e37a02baf"
PASSWORDS = ("alice-secret-1", "bob-secret-22")


def instance(store: Store, profile: str) -> Instance:
    name = f"{profile}-{uuid.uuid4().hex[:6]}"
    return store.create_instance(
        Instance(
            id=str(uuid.uuid4()),
            tenant="acme",
            name=name,
            profile=profile,
            driver="local",
            domain="ims.test",
            sizes={},
            attributes={},
        )
    )


def stored(store: Store) -> str:
    """Every column of every subscriber row as the database holds it, in one string."""
    with store.engine.connect() as c:
        return repr(c.execute(sa.text("SELECT * FROM subscribers")).all()).lower()


def fill(store: Store) -> tuple[Instance, Instance]:
    ims, core = instance(store, "ims"), instance(store, "sip-core")
    store.put_subscriber(Subscriber(ims.id, "alice", "ims.test", PASSWORDS[0], K, OPC))
    store.put_subscriber(Subscriber(core.id, "bob", "ims.test", PASSWORDS[1]))
    return ims, core


def test_no_clear_secret_in_any_column_and_each_comes_back_for_the_units(store: Store):
    ims, core = fill(store)
    rows = stored(store)
    ha1, ha1b = ha1_pair("bob", "ims.test", PASSWORDS[1])
    for secret in (*PASSWORDS, K, OPC, ha1, ha1b):
        assert secret not in rows
    assert store.subscribers(ims.id) == [Subscriber(ims.id, "alice", "ims.test", PASSWORDS[0], K, OPC)]
    # sip-core: the S-CSCFs check HA1, so no password is kept at all, not even sealed
    assert store.subscribers(core.id) == [Subscriber(core.id, "bob", "ims.test", "", ha1=ha1, ha1b=ha1b)]
    assert [s.auth for s in store.subscribers(core.id, secrets=False)] == [["digest"]]


def test_the_key_file_is_made_0600_on_first_use_only(store: Store, tmp_path: Path):
    key = tmp_path / "secrets.key"
    instance(store, "ims")
    assert not key.exists(), "no secret yet, no key"
    fill(store)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes().split()) == 1


def test_rotation_seals_everything_again_and_drops_the_old_key(store: Store, tmp_path: Path):
    ims, core = fill(store)
    key = tmp_path / "secrets.key"
    old_key, before = key.read_bytes().split(), stored(store)

    assert store.rotate_secrets() == 2
    new_key = key.read_bytes().split()
    assert len(new_key) == 1 and new_key != old_key, "one key left, and not the old one"
    assert stored(store) != before
    with store.engine.connect() as c:
        tokens = [
            t for row in c.execute(sa.text("SELECT password, k, opc, ha1, ha1b FROM subscribers")) for t in row if t
        ]
    assert len(tokens) == 5
    for token in tokens:  # the new key alone opens them; the old one opens none
        Fernet(new_key[0]).decrypt(token.encode())
        with pytest.raises(InvalidToken):
            Fernet(old_key[0]).decrypt(token.encode())
    assert store.subscribers(ims.id)[0].k == K
    assert store.subscribers(core.id)[0].ha1 == ha1_pair("bob", "ims.test", PASSWORDS[1])[0]


def test_a_rotation_interrupted_halfway_is_finished_by_the_next(store: Store, tmp_path: Path):
    """As after a crash between the two key writes: both keys in the file, rows under the old one."""
    ims, _ = fill(store)
    key = tmp_path / "secrets.key"
    old = key.read_bytes().split()[0]
    pending = Fernet.generate_key()
    Vault(key).write_keys([pending, old])

    assert store.rotate_secrets() == 2
    assert key.read_bytes().split() == [pending], "the pending key finished, no third key made"
    assert store.subscribers(ims.id)[0].password == PASSWORDS[0]
    assert store.rotate_secrets() == 2  # and a later rotation is an ordinary one


def test_a_missing_key_file_is_an_error_naming_it_not_a_new_key(store: Store, tmp_path: Path):
    ims, _ = fill(store)
    key = tmp_path / "secrets.key"
    key.unlink()
    with pytest.raises(VaultError, match=f"{key}.*missing"):
        store.subscribers(ims.id)
    with pytest.raises(VaultError, match=f"{key}.*missing.*2 subscriber"):
        store.put_subscriber(Subscriber(ims.id, "carol", "ims.test", "carol-secret-1"))
    assert not key.exists(), "a new key would have made the stored secrets unreadable for good"
    with pytest.raises(VaultError, match=str(key)):
        store.rotate_secrets()
    assert store.subscribers(ims.id, secrets=False)[0].auth == ["digest", "aka"]  # what needs no key


def test_a_wrong_key_file_is_an_error_naming_it(store: Store, tmp_path: Path):
    ims, _ = fill(store)
    key = tmp_path / "secrets.key"
    key.write_bytes(Fernet.generate_key() + b"\n")
    with pytest.raises(VaultError, match=f"does not open with the keys in {key}"):
        store.subscribers(ims.id)
    key.write_text("not a key\n")
    with pytest.raises(VaultError, match=f"{key} line 1 is not a Fernet key"):
        store.subscribers(ims.id)


def test_a_serving_process_takes_a_new_key_file_at_once(tmp_path: Path):
    """Two Vaults on one file, as `imsso serve` and `imsso secrets rotate` are."""
    serving, rotating = Vault(tmp_path / "k"), Vault(tmp_path / "k")
    token = serving.seal("x" * 10)
    rotating.write_keys([Fernet.generate_key()] + rotating.keys())
    fresh = serving.seal("y" * 10)
    assert rotating.sealed_with_primary(fresh) and not rotating.sealed_with_primary(token)
    rotating.write_keys(rotating.keys()[:1])
    assert serving.open(fresh) == "y" * 10


def test_migration_0004_seals_rows_stored_in_clear(store_url: str, tmp_path: Path):
    from alembic import command
    from alembic.config import Config

    from imsso.store import MIGRATIONS

    old = Store(store_url, Vault(tmp_path / "secrets.key"))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as c:
        config.attributes["connection"] = c
        command.upgrade(config, "0003")
        for iid, profile, block in (("i-ims", "ims", 0), ("i-core", "sip-core", 1)):
            c.exec_driver_sql(
                "INSERT INTO instances (id, tenant, name, profile, driver, domain, block, sizes, attributes,"
                " state, stack_state, provisioned, test_subscribers, secret, created_at, updated_at) VALUES"
                f" ('{iid}', 'acme', '{iid}', '{profile}', 'local', 'ims.test', {block}, '{{}}', '{{}}',"
                " 'active', 'CREATE_COMPLETE', true, true, 's', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        c.exec_driver_sql(
            'INSERT INTO subscribers (instance_id, "user", domain, password, k, opc) VALUES'
            f" ('i-ims', 'alice', 'ims.test', '{PASSWORDS[0]}', '{K}', '{OPC}'),"
            f" ('i-core', 'bob', 'ims.test', '{PASSWORDS[1]}', '', '')"
        )
    old.migrate()
    rows = stored(old)
    assert not any(secret in rows for secret in (*PASSWORDS, K, OPC))
    assert old.subscribers("i-ims") == [Subscriber("i-ims", "alice", "ims.test", PASSWORDS[0], K, OPC)]
    ha1, ha1b = ha1_pair("bob", "ims.test", PASSWORDS[1])
    assert old.subscribers("i-core") == [Subscriber("i-core", "bob", "ims.test", "", ha1=ha1, ha1b=ha1b)]
    old.close()


def test_a_profile_says_how_it_keeps_passwords(tmp_path: Path):
    assert profiles.load("sip-core").credentials == "ha1"
    assert profiles.load("ims").credentials == "encrypted"  # its HSS hands the password to the S-CSCF
    folder = tmp_path / "odd"
    (folder / "templates").mkdir(parents=True)
    (folder / "profile.yaml").write_text("name: odd\ndomain: odd.test\nroles: {}\nentry: pcscf\ncredentials: plain\n")
    with pytest.raises(InvalidInput, match="credentials 'plain' is not one of ha1, encrypted"):
        profiles._read(folder)


def test_the_key_file_may_live_elsewhere(tmp_path: Path):
    settings = Settings.from_env(
        {"IMSSO_DATA_DIR": str(tmp_path / "data"), "IMSSO_SECRETS_KEY_FILE": str(tmp_path / "other" / "k")}
    ).resolved()
    assert settings.secrets_key_file == tmp_path / "other" / "k"
    assert Settings.from_env({"IMSSO_DATA_DIR": str(tmp_path)}).resolved().secrets_key_file == tmp_path / "secrets.key"


def test_imsso_secrets_rotate(tmp_path: Path):
    key = tmp_path / "elsewhere" / "secrets.key"
    store = Store(f"sqlite:///{tmp_path / 'imsso.sqlite'}", Vault(key))
    store.migrate()
    ims, _ = fill(store)
    before = key.read_bytes()
    env = {"IMSSO_DATA_DIR": str(tmp_path), "IMSSO_SECRETS_KEY_FILE": str(key), "COLUMNS": "200"}
    done = CliRunner().invoke(cli.app, ["secrets", "rotate"], env=env)
    assert done.exit_code == 0, done.output
    assert "2 subscriber(s) sealed with a new key" in done.output
    assert key.read_bytes() != before and len(key.read_bytes().split()) == 1
    assert store.subscribers(ims.id)[0].opc == OPC

    key.unlink()
    done = CliRunner().invoke(cli.app, ["secrets", "rotate"], env=env)
    assert done.exit_code == 1 and str(key) in done.output.replace("\n", "") and "missing" in done.output
    missing = CliRunner().invoke(cli.app, ["secrets", "rotate"], env={**env, "IMSSO_DATA_DIR": str(tmp_path / "none")})
    assert missing.exit_code == 1 and "nothing to rotate" in missing.output
    store.close()
    assert not os.path.exists(tmp_path / "none" / "imsso.sqlite")
