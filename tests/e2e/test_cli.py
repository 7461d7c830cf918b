"""The one-command main job and the CLI, as a newcomer runs them: `imsso up`, the commands beside it,
Ctrl-C, `imsso down`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from harness import DNS_PORT, Sipp, wait_for


def test_up_commands_and_down(tmp_path):
    env = {
        **os.environ,
        "IMSSO_DATA_DIR": str(tmp_path / "data"),
        "IMSSO_LISTEN": "127.0.0.1:8054",
        "IMSSO_ADDRESS_POOL": "127.104.0.0/16",
        "IMSSO_DNS_PORT": str(DNS_PORT),
        "COLUMNS": "200",
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "imsso", "up", "--tenant", "newcomer"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = _read_until(up, "Serving.", timeout=90)
        text = "\n".join(lines)
        pcscf = re.search(r"P-CSCF\s*│\s*sip:([\d.]+):5060", text).group(1)
        creds = dict(re.findall(r"sip:(\w+)@ims\.test\s+password (\S+)", text))
        token = re.search(r"export IMSSO_TOKEN=(\S+) IMSSO_TENANT=newcomer", text).group(1)
        assert set(creds) == {"alice", "bob"}
        assert "provision: readiness through the P-CSCF" in text  # progress was shown step by step

        cli_env = {**env, "IMSSO_TOKEN": token, "IMSSO_TENANT": "newcomer"}

        def imsso(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "imsso", *args], env=cli_env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        assert "active" in imsso("list")
        imsso("subscriber", "add", "carol", "--password", "carol-secret-1")
        assert "sip:carol@ims.test" in imsso("subscriber", "list")
        assert "profile" in text and "ims" in text and "(username alice@ims.test)" in text
        register = ("register.xml", "carol", "carol-secret-1", "ims.test", "127.154.0.1")
        impi = ("-au", "carol@ims.test")  # the 3GPP profile's digest username: the private identity
        assert (
            Sipp(
                tmp_path, pcscf, *register, 5300, "-m", "1", "-key", "expires", "60", "-recv_timeout", "5000", *impi
            ).run()
            == 0
        ), "a subscriber added live registers at once"
        imsso("subscriber", "remove", "carol")
        assert (
            Sipp(
                tmp_path, pcscf, *register, 5310, "-m", "1", "-key", "expires", "60", "-recv_timeout", "5000", *impi
            ).run()
            != 0
        ), "a removed subscriber is refused at once"

        assert "scale succeeded" in imsso("scale", "default", "scscf=2")
        shown = imsso("show", "default")
        assert "scscf-2" in shown and "running" in shown
        assert "scale succeeded" in imsso("events", "default")

        up.send_signal(signal.SIGINT)  # Ctrl-C: the service stops, the IMS keeps running
        assert up.wait(timeout=30) == 0
        assert _units_running(tmp_path), "the IMS outlives the service"

        # `imsso up` again: the running IMS is adopted as it is, with the same P-CSCF.
        up = subprocess.Popen(
            [sys.executable, "-m", "imsso", "up", "--tenant", "newcomer"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        again = "\n".join(_read_until(up, "Serving.", timeout=60))
        assert f"sip:{pcscf}:5060" in again and "deploy:" not in again, again
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()

    down = subprocess.run(
        [sys.executable, "-m", "imsso", "down", "--tenant", "newcomer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert "dispose succeeded" in down.stdout and "imsso stopped" in down.stdout
    wait_for(lambda: not _units_running(tmp_path), 10, "no unit process left")
    assert list((tmp_path / "data" / "instances").iterdir()) == []
    assert not (tmp_path / "data" / "imsso.pid").exists()


def _read_until(proc: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("imsso up ended early:\n" + "\n".join(lines))
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"no '{marker}' within {timeout} s:\n" + "\n".join(lines))


def _units_running(tmp_path) -> bool:
    import psutil

    marker = str(tmp_path / "data" / "instances")
    return any(
        marker in " ".join(p.info["cmdline"] or ())
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["status"] != "zombie"
    )
