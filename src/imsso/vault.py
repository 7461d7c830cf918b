"""The key that seals subscribers' secrets (passwords kept recoverable, K, OPc) in the database.

The key lives in a file outside the database (`<data dir>/secrets.key`, or IMSSO_SECRETS_KEY_FILE),
mode 0600, one Fernet key per line: the first seals, all of them open. A database dump or backup
alone then reveals no secret. The file is read again whenever it changes on disk, so a rotation
run beside `imsso serve` takes effect in it at once.

A lock file beside the key (`<key file>.lock`) orders sealing and rotation: whoever seals and
stores holds it shared, a rotation that changes the key set holds it exclusive, so no secret is
sealed with a key the rotation is about to drop.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .model import OrchestratorError


def ha1_pair(user: str, realm: str, password: str) -> tuple[str, str]:
    """SIP Digest's HA1 for the username `user` and for `user@realm` (Kamailio's ha1 and ha1b)."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    return md5(f"{user}:{realm}:{password}"), md5(f"{user}@{realm}:{realm}:{password}")


class VaultError(OrchestratorError):
    """The key file is missing, unreadable or does not open what the database holds."""

    code = "unavailable"  # the operator's to fix: the service cannot open secrets until then


class Vault:
    def __init__(self, key_file: Path | str):
        self.key_file = Path(key_file)
        self._cache: tuple[tuple[int, int, int], list[bytes]] | None = None
        self._guard = threading.Lock()

    # sealing and opening
    def seal(self, plain: str) -> str:
        """`plain` encrypted with the primary key ("" stays "": nothing to hide)."""
        if not plain:
            return ""
        keys = self.keys(create=True)
        return Fernet(keys[0]).encrypt(plain.encode()).decode()

    def open(self, token: str) -> str:
        if not token:
            return ""
        try:
            return self._multi().decrypt(token.encode()).decode()
        except InvalidToken:
            raise VaultError(
                f"a stored secret does not open with the keys in {self.key_file}: "
                "the file was replaced or belongs to another database (restore the key "
                "file this database was sealed with)"
            ) from None

    def reseal(self, token: str) -> str:
        """`token` sealed again with the primary key (what a rotation does to every secret)."""
        if not token:
            return ""
        try:
            return self._multi().rotate(token.encode()).decode()
        except InvalidToken:
            raise VaultError(
                f"a stored secret does not open with the keys in {self.key_file}: "
                "restore the key file this database was sealed with"
            ) from None

    def sealed_with_primary(self, token: str) -> bool:
        if not token:
            return True
        try:
            Fernet(self.keys()[0]).decrypt(token.encode())
            return True
        except InvalidToken:
            return False

    # the key file
    def exists(self) -> bool:
        return self.key_file.exists()

    def keys(self, create: bool = False) -> list[bytes]:
        """The keys, primary first; the file is made (0600) on first use when `create`."""
        with self._guard:
            if create and not self.key_file.exists():
                self._create()
            try:
                st = self.key_file.stat()
            except FileNotFoundError:
                raise VaultError(
                    f"the secrets key file {self.key_file} is missing: the subscribers' "
                    "secrets cannot be opened without it (restore it from a backup, or "
                    "set IMSSO_SECRETS_KEY_FILE to where it is)"
                ) from None
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._cache is None or self._cache[0] != stamp:
                self._cache = (stamp, self._parse())
            return list(self._cache[1])

    def write_keys(self, keys: list[bytes]) -> None:
        """Replace the key set at once (a new file renamed over the old: never half written)."""
        self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.key_file.with_name(self.key_file.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"".join(k + b"\n" for k in keys))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.key_file)
        with self._guard:
            self._cache = None

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Held while a secret is sealed and stored: a rotation waits for it."""
        with self._flock(fcntl.LOCK_SH):
            yield

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._flock(fcntl.LOCK_EX):
            yield

    @contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.key_file.with_name(self.key_file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _create(self) -> None:
        self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:  # O_EXCL: two processes creating it at once keep one key
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _parse(self) -> list[bytes]:
        try:
            lines = self.key_file.read_bytes().split()
        except OSError as exc:
            raise VaultError(f"cannot read the secrets key file {self.key_file}: {exc.strerror}") from None
        for n, line in enumerate(lines, 1):
            try:
                Fernet(line)
            except ValueError:
                raise VaultError(
                    f"the secrets key file {self.key_file} line {n} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes, one key per line)"
                ) from None
        if not lines:
            raise VaultError(f"the secrets key file {self.key_file} holds no key")
        return lines

    def _multi(self) -> MultiFernet:
        return MultiFernet([Fernet(k) for k in self.keys()])
