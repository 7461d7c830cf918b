"""Processes of units: start in their own session, find again after a restart, stop for good.

A unit's processes are known by their command line naming the unit's folder, so they are found
even when the orchestrator died between starting one and recording its pid.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil


class ProcessError(Exception):
    pass


# Popen handles of the processes this orchestrator started, so their exit is reaped, and the
# exit status of those reaped, so an error message can still tell it.
_children: dict[int, subprocess.Popen] = {}
_exited: dict[int, int] = {}
_lock = threading.Lock()


def spawn(argv: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    """Start `argv` in a session of its own (it outlives us); return its pid and start time."""
    with open(log, "ab", opener=_private) as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_unit_limits,
            close_fds=True,
        )
    with _lock:
        _children[proc.pid] = proc
        _exited.pop(proc.pid, None)
    return proc.pid, start_time(proc.pid) or time.time()


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _unit_limits() -> None:
    # A crashing Kamailio would otherwise drop a core file in / (it changes directory there).
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # what a unit writes (pid file, its own state) is for its owner only
    os.umask(0o077)


def reap() -> None:
    with _lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                _exited[pid] = proc.returncode
                del _children[pid]


def exit_code(pid: int) -> int | None:
    """The exit status of a child that has ended, None while it runs or when it is not ours."""
    reap()
    with _lock:
        return _exited.get(pid)


def alive(pid: int | None, started_at: float | None, marker: str) -> bool:
    """True when `pid` runs, is not a zombie, began at `started_at` and its command names `marker`."""
    if not pid:
        return False
    reap()
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_at is not None and abs(proc.create_time() - started_at) > 1.0:
            return False  # the pid was reused by another process
        return any(marker in part for part in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def find(marker: str) -> list[psutil.Process]:
    """Every live process whose command line names `marker` (a unit's or instance's folder)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def stop(marker: str, pid: int | None, timeout: float = 5.0) -> list[int]:
    """SIGTERM the unit's process group and every process naming `marker`; SIGKILL what stays."""
    victims = {p.pid for p in find(marker)}
    if pid and alive(pid, None, marker):
        victims.add(pid)
        _signal_group(pid, signal.SIGTERM)
    for victim in victims:
        _signal(victim, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _any_alive(victims):
        time.sleep(0.05)
    for victim in victims:
        _signal(victim, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _any_alive(victims):
        time.sleep(0.05)
    if _any_alive(victims):
        raise ProcessError(
            f"processes of {marker} survived SIGKILL: {sorted(p for p in victims if psutil.pid_exists(p))}"
        )
    return sorted(victims)


def _any_alive(pids: set[int]) -> bool:
    reap()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(text[-lines:])
