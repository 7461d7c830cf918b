"""The HSS: imsso.hss.server, Diameter Cx for the CSCFs, a status page for probe and figures."""

from __future__ import annotations

from . import AT_START, DIAMETER, SIGNAL, STATUS, Probe, ProbeKind, Program, SubscriberSink, UnitPaths

DIAMETER_PORT = 3868
STATUS_PORT = 3870
PID_FILE = "hss.pid"
PACKAGES = ("python3",)


def argv(paths: UnitPaths) -> list[str]:
    line = [
        *paths.python,
        "--listen",
        paths.address,
        "--port",
        str(DIAMETER_PORT),
        "--config",
        f"{paths.unit_dir}/hss.json",
        "--subscribers",
        paths.hss_subscribers,
        "--status-port",
        str(STATUS_PORT),
    ]
    return line + (["--pidfile", f"{paths.run_dir}/{PID_FILE}"] if paths.pid_file else [])


PROGRAM = Program(
    name="hss",
    probe_specs=(Probe("hss-status", kind=ProbeKind.HTTP, port=STATUS_PORT, path="/status"),),
    reloads=frozenset({AT_START, SIGNAL}),
    packages=PACKAGES,
    pid_file=PID_FILE,
    argv=argv,
    ports={DIAMETER: DIAMETER_PORT, STATUS: STATUS_PORT},
    python_module="imsso.hss.server",
    subscriber_sink=SubscriberSink.HSS_FILE,
    metrics="hss",
)
