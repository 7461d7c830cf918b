"""The HSS's durable state: registrations (S-CSCF per public identity) and the last AKA SQN per
private identity, kept in one JSON file of the unit so that a restart or a heal forgets no
registration and pushes no UE into resynchronisation.

    {"format": 1,
     "registrations": {"sip:alice@ims.test": {"server": "sip:127.100.0.11:5060", "registered": true}},
     "sqn": {"alice@ims.test": 1056}}

Each change is written before the answer that reveals it leaves (temporary file, fsync, rename,
fsync of the folder): a vector handed out is never handed out again after a crash. A file that
cannot be read is reported and set aside (renamed *.corrupt), and the HSS starts empty.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
SQN_MAX = (1 << 48) - 1


class StateError(ValueError):
    """The state file's content cannot be used."""


@dataclass
class State:
    registrations: dict[str, tuple[str, bool]] = field(default_factory=dict)  # impu -> (server, registered)
    sqn: dict[str, int] = field(default_factory=dict)  # impi -> last SQN handed out

    def to_json(self) -> str:
        regs = {u: {"server": s, "registered": r} for u, (s, r) in sorted(self.registrations.items())}
        return json.dumps({"format": FORMAT, "registrations": regs, "sqn": dict(sorted(self.sqn.items()))}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StateError(f"not a state file of format {FORMAT}")
        regs, sqn = data.get("registrations", {}), data.get("sqn", {})
        if not isinstance(regs, dict) or not isinstance(sqn, dict):
            raise StateError("'registrations' and 'sqn' must be objects")
        out = cls()
        for impu, reg in regs.items():
            if not (
                isinstance(reg, dict)
                and isinstance(reg.get("server"), str)
                and reg["server"]
                and isinstance(reg.get("registered"), bool)
            ):
                raise StateError(f"registration of {impu}: needs 'server' (text) and 'registered' (bool)")
            out.registrations[impu] = (reg["server"], reg["registered"])
        for impi, value in sqn.items():
            if type(value) is not int or not 0 <= value <= SQN_MAX:
                raise StateError(f"sqn of {impi}: an integer from 0 to 2^48-1, not {value!r}")
            out.sqn[impi] = value
        return out


class StateFile:
    """One file, written whole and atomically; writers of older versions give way to newer ones."""

    def __init__(self, path: Path, log: Callable[[str], None]):
        self.path = path
        self.log = log
        self._lock = threading.Lock()
        self._written = 0  # the newest version on disk
        self.failures = 0

    def load(self) -> State:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            self.log(f"state file {self.path} unreadable ({exc.strerror or exc}): starting empty")
            return State()
        try:
            return State.from_json(text)
        except (ValueError, StateError) as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            self.log(
                f"state file {self.path} is corrupt ({exc}): set aside as {aside.name}, "
                "starting with no registrations and the subscribers file's SQN"
            )
            try:
                os.replace(self.path, aside)
            except OSError:
                pass
            return State()

    def save(self, version: int, state: State) -> bool:
        """Write `state` unless a newer version is already on disk. False: the write failed."""
        with self._lock:
            if version <= self._written:
                return True
            try:
                _write_atomically(self.path, state.to_json())
            except OSError as exc:
                self.failures += 1
                self.log(
                    f"state file {self.path} not written ({exc.strerror or exc}): "
                    "a restart now would forget the latest changes"
                )
                return False
            self._written = version
            return True


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself must survive a power cut
    finally:
        os.close(folder)


def state_snapshot(registrations: dict[str, Any], sqn: dict[str, int]) -> State:
    """A State from the HSS's own tables (Registration objects with server and registered)."""
    return State({u: (r.server, r.registered) for u, r in registrations.items()}, dict(sqn))
