"""Kamailio: the CSCFs. Foreground process, JSON-RPC management, SIP OPTIONS probe."""

from __future__ import annotations

from . import AT_START, MANAGEMENT, SIP, Probe, ProbeKind, Program, SubscriberSink, UnitPaths

SIP_PORT = 5060
HTTP_PORT = 5080  # its JSON-RPC (jsonrpcs over xhttp): the management path
PID_FILE = "kamailio.pid"
PACKAGES = (
    "kamailio",
    "kamailio-extra-modules",
    "kamailio-utils-modules",
    "kamailio-sqlite-modules",
    "kamailio-json-modules",
    "kamailio-ims-modules",
    "kamailio-presence-modules",
    "sqlite3",
)
MODULE_PACKAGES = {
    "db_sqlite": "kamailio-sqlite-modules",
    "json": "kamailio-json-modules",
    "jansson": "kamailio-extra-modules",
    "presence": "kamailio-presence-modules",
    **{
        m: "kamailio-ims-modules"
        for m in (
            "cdp",
            "cdp_avp",
            "ims_auth",
            "ims_icscf",
            "ims_ipsec_pcscf",
            "ims_registrar_pcscf",
            "ims_registrar_scscf",
            "ims_usrloc_pcscf",
            "ims_usrloc_scscf",
            "ims_dialog",
        )
    },
}
# The RPC methods a profile may name to apply a file live, or to call when a unit leaves.
RELOAD_CALLS = frozenset({"dispatcher.reload"})
LEAVE_CALLS = frozenset({"dmq.remove"})


def argv(paths: UnitPaths) -> list[str]:
    # -DD: stay in the foreground so the pid held is Kamailio's main process;
    # -E: log to stderr, which is the unit's log.
    return [
        paths.executable or "kamailio",
        "-DD",
        "-E",
        "-f",
        f"{paths.unit_dir}/kamailio.cfg",
        "-P",
        f"{paths.run_dir}/{PID_FILE}",
        "-Y",
        paths.run_dir,
        "-m",
        str(paths.shm_mb),
        "-M",
        "8",
    ]


PROGRAM = Program(
    name="kamailio",
    probe_specs=(Probe("sip-options", kind=ProbeKind.SIP, port=SIP_PORT),),
    reloads=frozenset({AT_START}) | RELOAD_CALLS,
    leave_calls=LEAVE_CALLS,
    packages=PACKAGES,
    pid_file=PID_FILE,
    argv=argv,
    ports={SIP: SIP_PORT, MANAGEMENT: HTTP_PORT},
    subscriber_sink=SubscriberSink.SQL_TABLE,
    management=True,
    metrics="kamailio",
    module_packages=MODULE_PACKAGES,
    binary="kamailio",
    system_binary="/usr/sbin/kamailio",
    stop_package_service="kamailio.service",
)
