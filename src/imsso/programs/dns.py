"""The DNS unit: imsso.dns.server, serving the instance's zone; SIGHUP re-reads the zone."""

from __future__ import annotations

from . import AT_START, DNS, SIGNAL, Probe, ProbeKind, Program, UnitPaths

PORT = 53
PID_FILE = "dns.pid"
PACKAGES = ("python3", "python3-dnslib")


def argv(paths: UnitPaths) -> list[str]:
    line = [
        *paths.python,
        "--zone",
        f"{paths.unit_dir}/zone.json",
        "--listen",
        paths.address,
        "--port",
        str(paths.dns_port),
    ]
    return line + (["--pidfile", f"{paths.run_dir}/{PID_FILE}"] if paths.pid_file else [])


PROGRAM = Program(
    name="dns",
    probe_specs=(Probe("dns", kind=ProbeKind.DNS, port=PORT),),
    reloads=frozenset({AT_START, SIGNAL}),
    packages=PACKAGES,
    pid_file=PID_FILE,
    argv=argv,
    ports={DNS: PORT},
    python_module="imsso.dns.server",
    standalone=True,  # dnslib is a Debian package: the file runs alone on a server
)
