"""The program registry: each program's declarations, and the built-in profiles keep within them."""

from __future__ import annotations

import sys

import pytest

from imsso import profiles, programs
from imsso.model import InvalidInput
from imsso.programs import ProbeKind, SubscriberSink, UnitPaths


def test_the_registry_knows_kamailio_dns_and_hss():
    assert sorted(programs.registry()) == ["dns", "hss", "kamailio"]
    assert all(programs.get(name).name == name for name in programs.registry())


def test_an_unknown_program_is_refused_naming_the_known_ones():
    with pytest.raises(InvalidInput, match="unknown program 'bind9': known are dns, hss, kamailio"):
        programs.get("bind9")


def test_probes_and_reloads_are_the_ones_the_profiles_use_today():
    assert programs.get("kamailio").probes == {"sip-options"}
    assert programs.get("dns").probes == {"dns"}
    assert programs.get("hss").probes == {"hss-status"}
    assert programs.get("kamailio").reloads >= {"at-start", "dispatcher.reload"}
    assert programs.get("dns").reloads == {"at-start", "signal"}
    assert programs.get("hss").reloads == {"at-start", "signal"}
    assert programs.get("kamailio").leave_calls == {"dmq.remove"}


@pytest.mark.parametrize("name", ["sip-core", "ims"])
def test_every_built_in_role_names_a_probe_and_reloads_its_program_declares(name):
    for role in profiles.load(name).roles.values():
        program = programs.get(role.program)
        assert role.probe in program.probes, role.name
        assert set(role.reload.values()) <= program.reloads, role.name
        if role.on_leave:
            assert role.on_leave["rpc"] in program.leave_calls, role.name


def test_probes_say_what_they_check_on_which_port():
    assert programs.probe_owner("sip-options") == programs.Probe("sip-options", ProbeKind.SIP, 5060)
    assert programs.probe_owner("hss-status").port == 3870
    assert programs.probe_owner("hss-status").path == "/status"
    with pytest.raises(InvalidInput, match="unknown probe 'dnss'"):
        programs.probe_owner("dnss")
    with pytest.raises(InvalidInput, match="program dns has no probe 'sip-options'"):
        programs.get("dns").probe("sip-options")


def test_kamailio_argv_stays_in_the_foreground_with_its_paths():
    paths = UnitPaths(unit_dir="/d/u", run_dir="/run/u", address="127.1.0.2", shm_mb=48)
    assert programs.get("kamailio").argv(paths) == [
        "kamailio",
        "-DD",
        "-E",
        "-f",
        "/d/u/kamailio.cfg",
        "-P",
        "/run/u/kamailio.pid",
        "-Y",
        "/run/u",
        "-m",
        "48",
        "-M",
        "8",
    ]
    packaged = UnitPaths(unit_dir="/d/u", run_dir="/run/u", address="x", executable="/usr/sbin/kamailio")
    assert programs.get("kamailio").argv(packaged)[0] == "/usr/sbin/kamailio"


def test_our_python_programs_run_as_a_module_or_a_shipped_file():
    here = UnitPaths(
        unit_dir="/d/dns-1",
        run_dir="/d/dns-1",
        address="127.1.0.3",
        dns_port=5353,
        python=(sys.executable, "-m", "imsso.dns.server"),
    )
    assert programs.get("dns").argv(here) == [
        sys.executable,
        "-m",
        "imsso.dns.server",
        "--zone",
        "/d/dns-1/zone.json",
        "--listen",
        "127.1.0.3",
        "--port",
        "5353",
        "--pidfile",
        "/d/dns-1/dns.pid",
    ]
    server = UnitPaths(
        unit_dir="/etc/imsso/dns-1",
        run_dir="/run/x",
        address="10.0.0.5",
        python=("/usr/bin/python3", "/usr/local/lib/imsso/dns_server.py"),
        pid_file=False,
    )
    assert "--pidfile" not in programs.get("dns").argv(server)
    hss = programs.get("hss").argv(
        UnitPaths(
            unit_dir="/d/hss-1",
            run_dir="/d/hss-1",
            address="127.1.0.4",
            hss_subscribers="/d/hss.json",
            python=("py", "-m", "m"),
        )
    )
    assert hss[hss.index("--subscribers") + 1] == "/d/hss.json"
    assert hss[hss.index("--port") + 1] == "3868" and hss[hss.index("--status-port") + 1] == "3870"
    assert hss[-2:] == ["--pidfile", "/d/hss-1/hss.pid"]


def test_packages_pid_files_sinks_and_metrics():
    kamailio, dns, hss = (programs.get(n) for n in ("kamailio", "dns", "hss"))
    assert {"kamailio", "kamailio-sqlite-modules", "kamailio-ims-modules"} <= set(kamailio.packages)
    assert kamailio.module_packages["ims_auth"] == "kamailio-ims-modules"
    assert dns.packages == ("python3", "python3-dnslib") and "python3" in hss.packages
    assert (kamailio.pid_file, dns.pid_file, hss.pid_file) == ("kamailio.pid", "dns.pid", "hss.pid")
    assert kamailio.subscriber_sink == SubscriberSink.SQL_TABLE
    assert hss.subscriber_sink == SubscriberSink.HSS_FILE and dns.subscriber_sink == SubscriberSink.NONE
    assert (kamailio.metrics, hss.metrics, dns.metrics) == ("kamailio", "hss", "")
    assert kamailio.management and not dns.management and not hss.management
    assert kamailio.ports[programs.MANAGEMENT] == 5080 and hss.ports[programs.STATUS] == 3870
    assert dns.standalone and not hss.standalone  # the HSS cannot be shipped as one file yet
