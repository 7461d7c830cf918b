"""The openstack driver without a cloud: the HOT rendering (pure) and the engine's stack path with
Heat faked at its boundary (apply, preview, dispose). Real Heat runs in tests/openstack/."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from fakes import Orchestrator
from imsso import planning, profiles
from imsso.api import views
from imsso.drivers import DriverError
from imsso.drivers.openstack import Credentials, OpenStackDriver
from imsso.drivers.openstack import template as hot
from imsso.drivers.openstack.heat import StackStatus, template_diff
from imsso.model import Instance, InstanceState, InvalidInput, OperationKind, OperationState, Subscriber, Unit

K = OperationKind
DEFAULTS = {
    "image": "debian-12",
    "flavor": "m1.small",
    "network": "ims-net",
    "cidr": "10.9.0.0/24",
    "boot_timeout": "600",
}


def make_instance(**attributes) -> Instance:
    return Instance(
        id="0123456789abcdef",
        tenant="t1",
        name="core",
        profile="sip-core",
        driver="openstack",
        domain="ims.test",
        sizes={"pcscf": 1, "scscf": 2, "dns": 1},
        attributes=attributes,
        secret="s3cret",
    )


def units(*specs: tuple[str, int, str]) -> list[Unit]:
    return [
        Unit(id=f"{role}-{i}", instance_id="x", name=f"{role}-{i}", role=role, index=i, address=addr)
        for role, i, addr in specs
    ]


UNITS = units(("scscf", 1, "10.9.0.10"), ("scscf", 2, "10.9.0.11"), ("pcscf", 1, "10.9.0.12"), ("dns", 1, "10.9.0.13"))


def render(instance: Instance, unit_list=UNITS, subs=()) -> dict:
    opts = hot.options(instance.attributes, DEFAULTS)
    profile = profiles.load("sip-core")
    plan = planning.build(instance, profile, unit_list, lambda i, n: hot.layout(opts, n))
    return hot.render(instance, profile, plan, list(subs), opts, "# dns server source\n")


# --- options ------------------------------------------------------------------------------------------


def test_options_take_attributes_over_configured_defaults():
    opts = hot.options({"imsso.os.flavor": "m1.large", "imsso.os.floating_network": "public"}, DEFAULTS)
    assert (opts.image, opts.flavor, opts.floating_network, opts.cidr) == (
        "debian-12",
        "m1.large",
        "public",
        "10.9.0.0/24",
    )


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"imsso.os.cidr": "10.9.0.0/33"}, "not an IPv4 network"),
        ({"imsso.os.cidr": "10.9.0.0/30"}, "too small"),
        ({"imsso.os.image": "bad image\n"}, "is not a name or id"),
        ({"imsso.os.boot_timeout": "0"}, "1 to 7200 seconds"),
        ({"imsso.os.boot_timeout": "soon"}, "number of seconds"),
        ({"imsso.os.colour": "blue"}, "unknown attribute imsso.os.colour: accepted are imsso.os.image"),
    ],
)
def test_bad_options_are_refused_with_what_is_accepted(attributes, message):
    with pytest.raises(InvalidInput, match=message):
        hot.options(attributes, DEFAULTS)


def test_an_option_without_default_or_attribute_is_named():
    with pytest.raises(InvalidInput, match="imsso.os.image is not set .*IMSSO_OS_IMAGE"):
        hot.options({}, {**DEFAULTS, "image": ""})


# --- the template -------------------------------------------------------------------------------------


def test_each_unit_gets_a_port_with_its_address_a_server_and_a_wait_condition():
    template = render(make_instance())
    res = template["resources"]
    assert template["heat_template_version"] == "2021-04-16"
    for unit in UNITS:
        port = res[f"{unit.name}-port"]
        assert port["type"] == "OS::Neutron::Port"
        assert port["properties"]["fixed_ips"] == [{"ip_address": unit.address}]
        assert port["properties"]["security_groups"] == [{"get_resource": f"{unit.role}-secgroup"}]
        server = res[unit.name]["properties"]
        assert res[unit.name]["type"] == "OS::Nova::Server"
        assert server["networks"] == [{"port": {"get_resource": f"{unit.name}-port"}}]
        assert server["image"] == {"get_param": "image"} and "key_name" not in server
        assert res[f"{unit.name}-ready"]["properties"]["timeout"] == 600
        assert res[f"{unit.name}-ready"]["depends_on"] == unit.name
        notify = server["user_data"]["str_replace"]["params"][hot.NOTIFY]
        assert notify == {"get_attr": [f"{unit.name}-ready-handle", "curl_cli"]}
    assert template["parameters"]["network"]["default"] == "ims-net"
    assert not any(r["type"] == "OS::Neutron::FloatingIP" for r in res.values())
    assert set(template["outputs"]) == {f"mcn.endpoint.{u.name}.ims-net.private" for u in UNITS}
    assert template["outputs"]["mcn.endpoint.pcscf-1.ims-net.private"]["value"] == "10.9.0.12"


def test_floating_ips_only_for_what_clients_reach():
    template = render(make_instance(**{"imsso.os.floating_network": "public", "imsso.os.key_name": "ops"}))
    res = template["resources"]
    fips = sorted(n for n, r in res.items() if r["type"] == "OS::Neutron::FloatingIP")
    assert fips == ["pcscf-1-floating-ip"]  # the DNS answers the subnet only, unless told otherwise
    assert res["pcscf-1-floating-ip"]["properties"]["port_id"] == {"get_resource": "pcscf-1-port"}
    assert template["outputs"]["mcn.endpoint.pcscf-1.ims-net.public"]["value"] == {
        "get_attr": ["pcscf-1-floating-ip", "floating_ip_address"]
    }
    assert "mcn.endpoint.scscf-1.ims-net.public" not in template["outputs"]
    assert res["scscf-1"]["properties"]["key_name"] == {"get_param": "key_name"}
    public_dns = render(make_instance(**{"imsso.os.floating_network": "public", "imsso.os.dns_clients": "0.0.0.0/0"}))
    assert "dns-1-floating-ip" in public_dns["resources"]
    assert "mcn.endpoint.dns-1.ims-net.public" in public_dns["outputs"]


# --- security groups: (port, protocol, remote prefix) of every rule, per role -----------------------

CIDR, WORLD, MANAGER = "10.9.0.0/24", "0.0.0.0/0", "192.0.2.7/32"
ICMP = (None, "icmp", CIDR)


def rules(resources: dict) -> dict[str, set[tuple]]:
    return {
        name.removesuffix("-secgroup"): {
            (r.get("port_range_min"), r["protocol"], r["remote_ip_prefix"]) for r in res["properties"]["rules"]
        }
        for name, res in resources.items()
        if res["type"] == "OS::Neutron::SecurityGroup"
    }


def both(port: int, prefix: str) -> set[tuple]:
    return {(port, "udp", prefix), (port, "tcp", prefix)}


def ims_groups(**attributes) -> dict[str, set[tuple]]:
    """The ims profile's groups (its HSS does not run on servers yet, so the whole template does not render)."""
    instance = Instance(
        id="0123456789abcdef",
        tenant="t1",
        name="core",
        profile="ims",
        driver="openstack",
        domain="ims.test",
        sizes={"hss": 1, "scscf": 1, "icscf": 1, "pcscf": 1, "dns": 1},
        attributes=attributes,
        secret="s3cret",
    )
    opts = hot.options(attributes, DEFAULTS)
    profile = profiles.load("ims")
    plan = planning.build(
        instance,
        profile,
        units(
            ("hss", 1, "10.9.0.10"),
            ("scscf", 1, "10.9.0.11"),
            ("icscf", 1, "10.9.0.12"),
            ("pcscf", 1, "10.9.0.13"),
            ("dns", 1, "10.9.0.14"),
        ),
        lambda i, n: hot.layout(opts, n),
    )
    return rules(hot.security_groups(instance, profile, plan, opts))


def test_sip_core_groups_open_sip_to_the_world_at_the_p_cscf_and_the_rest_to_the_subnet():
    assert rules(render(make_instance())["resources"]) == {
        "pcscf": {ICMP, *both(5060, WORLD)},  # no management rule: the orchestrator is on 127.0.0.1
        "scscf": {ICMP, *both(5060, CIDR)},
        "dns": {ICMP, *both(53, CIDR)},
    }


def test_sip_core_groups_with_a_manager_and_a_key_pair():
    groups = rules(
        render(make_instance(**{"imsso.os.manager_address": "192.0.2.7", "imsso.os.key_name": "ops"}))["resources"]
    )
    ssh = (22, "tcp", MANAGER)
    assert groups == {
        "pcscf": {ICMP, *both(5060, WORLD), (5080, "tcp", MANAGER), ssh},
        "scscf": {ICMP, *both(5060, CIDR), (5080, "tcp", MANAGER), ssh},
        "dns": {ICMP, *both(53, CIDR), ssh},
    }


def test_a_key_pair_without_a_manager_address_opens_no_ssh():
    groups = rules(render(make_instance(**{"imsso.os.key_name": "ops"}))["resources"])
    assert not any(port == 22 for group in groups.values() for port, _, _ in group)


def test_ims_groups_keep_diameter_and_the_hss_status_inside():
    assert ims_groups() == {
        "pcscf": {ICMP, *both(5060, WORLD)},
        "icscf": {ICMP, *both(5060, CIDR), (3868, "tcp", CIDR)},
        "scscf": {ICMP, *both(5060, CIDR), (3868, "tcp", CIDR)},
        "hss": {ICMP, (3868, "tcp", CIDR), (3870, "tcp", CIDR)},
        "dns": {ICMP, *both(53, CIDR)},
    }
    managed = ims_groups(**{"imsso.os.manager_address": "192.0.2.7"})
    assert managed["hss"] == {ICMP, (3868, "tcp", CIDR), (3870, "tcp", CIDR), (3870, "tcp", MANAGER)}
    assert (5080, "tcp", MANAGER) in managed["icscf"] and (3868, "tcp", MANAGER) not in managed["icscf"]


@pytest.mark.parametrize(
    "groups", [lambda **a: rules(render(make_instance(**a))["resources"]), ims_groups], ids=["sip-core", "ims"]
)
@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"imsso.os.manager_address": "192.0.2.7", "imsso.os.key_name": "k"},
        {"imsso.os.dns_clients": "203.0.113.0/24"},
    ],
)
def test_only_the_entry_sip_ports_are_open_to_the_world(groups, attributes):
    for role, group in groups(**attributes).items():
        world = {(port, proto) for port, proto, prefix in group if prefix == WORLD}
        assert world == ({(5060, "udp"), (5060, "tcp")} if role == "pcscf" else set()), role


@pytest.mark.parametrize(
    "groups", [lambda **a: rules(render(make_instance(**a))["resources"]), ims_groups], ids=["sip-core", "ims"]
)
def test_dns_clients_open_the_dns_port_to_them_and_nothing_else(groups):
    plain = groups()
    opened = groups(**{"imsso.os.dns_clients": "0.0.0.0/0, 203.0.113.0/24"})
    assert opened["dns"] == plain["dns"] | both(53, WORLD) | both(53, "203.0.113.0/24")
    assert {r: g for r, g in opened.items() if r != "dns"} == {r: g for r, g in plain.items() if r != "dns"}


@pytest.mark.parametrize(
    "value, message",
    [
        ("10.0.0.1/24", "'10.0.0.1/24' is not an IPv4 network"),
        ("everyone", "'everyone' is not an IPv4 network such as 203.0.113.0/24"),
        (",".join(f"10.{i}.0.0/16" for i in range(17)), "names 17 networks: at most 16"),
    ],
)
def test_bad_dns_clients_are_refused_with_what_is_accepted(value, message):
    with pytest.raises(InvalidInput, match=message):
        hot.options({"imsso.os.dns_clients": value}, DEFAULTS)


def test_user_data_writes_the_same_configs_as_the_plan_and_starts_the_unit():
    instance = make_instance()
    subs = [Subscriber("x", "alice", "ims.test", "pa'ss-word")]
    res = render(instance, subs=subs)["resources"]
    text = res["pcscf-1"]["properties"]["user_data"]["str_replace"]["template"]
    assert text.startswith("#cloud-config\n")
    cloud = yaml.safe_load(text)
    files = {f["path"]: f["content"] for f in cloud["write_files"]}
    opts = hot.options({}, DEFAULTS)
    plan = planning.build(instance, profiles.load("sip-core"), UNITS, lambda i, n: hot.layout(opts, n))
    assert files["/etc/imsso/pcscf-1/dispatcher.list"] == plan.unit("pcscf-1").files["dispatcher.list"]
    assert "sip:10.9.0.10:5060" in files["/etc/imsso/pcscf-1/dispatcher.list"]
    assert (
        "/usr/sbin/kamailio -DD -E -f /etc/imsso/pcscf-1/kamailio.cfg"
        in files["/etc/systemd/system/imsso-pcscf-1.service"]
    )
    assert "kamailio" in cloud["packages"]
    assert not any(p.endswith("subscribers.sql") for p in files)  # the P-CSCF authenticates no one
    scscf = yaml.safe_load(res["scscf-1"]["properties"]["user_data"]["str_replace"]["template"])
    sql = next(f["content"] for f in scscf["write_files"] if f["path"].endswith("subscribers.sql"))
    assert "('alice', 'ims.test', 'pa''ss-word', '', '')" in sql  # quoted for SQL; no HA1 given here
    assert any("sqlite3 /var/lib/imsso/subscribers.sqlite" in c[2] for c in scscf["runcmd"])
    dns = yaml.safe_load(res["dns-1"]["properties"]["user_data"]["str_replace"]["template"])
    assert {f["path"] for f in dns["write_files"]} >= {
        "/etc/imsso/dns-1/zone.json",
        "/usr/local/lib/imsso/dns_server.py",
    }
    assert any(hot.NOTIFY in c[2] and "SUCCESS" in c[2] and "FAILURE" in c[2] for c in dns["runcmd"])


def test_the_template_is_the_same_for_the_same_inputs_and_scaling_adds_only_the_new_unit():
    instance = make_instance()
    assert render(instance) == render(instance)
    bigger = render(instance, UNITS + units(("scscf", 3, "10.9.0.14")))
    smaller = render(instance)
    added = set(bigger["resources"]) - set(smaller["resources"])
    assert added == {"scscf-3", "scscf-3-port", "scscf-3-ready", "scscf-3-ready-handle"}
    for name in ("scscf-1-port", "pcscf-1-port", "scscf-secgroup", "pcscf-secgroup"):
        assert bigger["resources"][name] == smaller["resources"][name]


def test_the_diff_shows_only_what_changed():
    old = render(make_instance())
    new = render(make_instance(**{"imsso.os.flavor": "m1.large"}))
    diff = template_diff(old, new)
    assert "-    default: m1.small" in diff and "+    default: m1.large" in diff
    assert template_diff(old, old) == ""


def test_environment_files_named_in_its_registry_travel_with_it(tmp_path: Path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "none.yaml").write_text(
        "resource_registry:\n  OS::Nova::Server: OS::Heat::None\n  OS::Heat::WaitCondition: slow.yaml\n"
    )
    (tmp_path / "envs" / "slow.yaml").write_text("heat_template_version: '2021-04-16'\n")
    driver = OpenStackDriver(Credentials(None, "", ""), DEFAULTS, environment_dir=tmp_path / "envs")
    env, files = driver.environment(hot.options({"imsso.os.environment": "none"}, DEFAULTS))
    assert env["resource_registry"]["OS::Nova::Server"] == "OS::Heat::None"
    assert files == {"slow.yaml": "heat_template_version: '2021-04-16'\n"}
    with pytest.raises(InvalidInput, match="must name a file of the environments folder"):
        hot.options({"imsso.os.environment": "../etc"}, DEFAULTS)
    with pytest.raises(DriverError, match="cannot read the Heat environment"):
        driver.environment(hot.options({"imsso.os.environment": "absent"}, DEFAULTS))


def test_without_keystone_or_a_cloud_account_the_driver_says_what_it_needs():
    with pytest.raises(DriverError, match="needs Keystone .* or a clouds.yaml account"):
        Credentials(None, "", "").connect("t1")
    creds = Credentials(lambda token: [], "RegionTwo", "")
    with pytest.raises(DriverError, match="no Keystone token of project t1"):
        creds.connect("t1")
    creds.remember("t1", "tok")
    with pytest.raises(DriverError, match="no public orchestration .* in region RegionTwo"):
        creds.connect("t1")


# --- the engine's stack path, Heat faked at the driver's boundary -------------------------------------


class FakeHeat(OpenStackDriver):
    """The real driver (options, rendering, environment) with Heat's calls recorded instead."""

    def __init__(self, tmp_path: Path):
        super().__init__(Credentials(None, "", ""), DEFAULTS, environment_dir=tmp_path)
        self.applied: list[dict] = []
        self.fail_with = ""
        self.disposed: list[str] = []
        self.lock = threading.Lock()

    def apply(self, instance, request, record_id, deadline):
        with self.lock:
            record_id("stack-" + instance.id[:4])
            self.applied.append(request.template)
            if self.fail_with:
                reason, self.fail_with = self.fail_with, ""
                raise DriverError(f"stack {request.name} is CREATE_FAILED: {reason}", "scscf-1-ready")
        return StackStatus(
            id="stack-" + instance.id[:4],
            name=request.name,
            status="CREATE_COMPLETE",
            reason="",
            outputs={k: v["value"] for k, v in request.template["outputs"].items() if isinstance(v["value"], str)},
        )

    def preview(self, instance, request):
        return {
            "stack": {"id": instance.stack_id, "status": "CREATE_COMPLETE"},
            "action": "update",
            "resources": {"added": [], "deleted": [], "replaced": [], "updated": []},
            "diff": "",
        }

    def dispose(self, instance, units):
        self.disposed.append(instance.stack_id)
        return [f"deleted stack {instance.stack_id}"]


@pytest.fixture
def cloud(tmp_path: Path):
    orch = Orchestrator(tmp_path / "data")
    orch.drivers["openstack"] = FakeHeat(tmp_path)
    orch.start()
    yield orch
    orch.stop()


def servers(template: dict) -> list[str]:
    return sorted(n for n, r in template["resources"].items() if r["type"] == "OS::Nova::Server")


def test_deploy_creates_the_stack_and_shows_its_id_state_and_outputs(cloud):
    heat = cloud.drivers["openstack"]
    instance, op = cloud.service.create(cloud.caller(), "core", driver="openstack", then=(K.DEPLOY,))
    op = cloud.wait_chain(op.id)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert [s.name for s in op.steps][-2:] == ["template", "stack create"]
    instance = cloud.store.get_instance(instance.id)
    assert instance.state == InstanceState.DEPLOYED and instance.stack_state == "CREATE_COMPLETE"
    attrs = views.attributes(instance, cloud.store.units(instance.id), None)
    assert attrs["occi.mcn.stack.id"] == instance.stack_id == "stack-" + instance.id[:4]
    assert attrs["mcn.endpoint.pcscf-1.ims-net.private"].startswith("10.9.0.")
    assert servers(heat.applied[0]) == ["dns-1", "pcscf-1", "scscf-1"]
    # the test subscribers boot with the S-CSCF
    assert "'alice'" in heat.applied[0]["resources"]["scscf-1"]["properties"]["user_data"]["str_replace"]["template"]


def test_scale_updates_the_stack_and_the_units_follow(cloud):
    heat = cloud.drivers["openstack"]
    instance, op = cloud.service.create(cloud.caller(), "core", driver="openstack", then=(K.DEPLOY,))
    cloud.wait_chain(op.id)
    for size in (3, 2):
        op = cloud.wait(cloud.service.scale(cloud.caller(), "core", {"scscf": size}).id)
        assert op.state == OperationState.SUCCEEDED, op.error
        assert "stack update" in [s.name for s in op.steps]
        names = sorted(u.name for u in cloud.store.units(instance.id) if u.role == "scscf")
        assert names == [f"scscf-{i}" for i in range(1, size + 1)]
        assert servers(heat.applied[-1]).count("scscf-1") == 1
        assert len([s for s in servers(heat.applied[-1]) if s.startswith("scscf")]) == size
    endpoints = views.endpoints(cloud.store.get_instance(instance.id), [])
    assert sorted(k.split(".")[2] for k in endpoints) == ["dns-1", "pcscf-1", "scscf-1", "scscf-2"]


def test_a_failed_stack_fails_the_operation_with_heats_reason_and_a_retry_updates_it(cloud):
    heat = cloud.drivers["openstack"]
    heat.fail_with = "WaitConditionTimeout: resources.scscf-1-ready: 0 of 1 received"
    instance, op = cloud.service.create(cloud.caller(), "core", driver="openstack", then=(K.DEPLOY,))
    op = cloud.wait_chain(op.id)
    assert op.state == OperationState.FAILED
    assert op.error.step == "stack create" and "0 of 1 received" in op.error.message
    failed = cloud.store.get_instance(instance.id)
    assert failed.state == InstanceState.FAILED and failed.stack_state == "CREATE_FAILED"
    assert failed.stack_id  # kept: the retry updates this stack, the dispose deletes it
    retry = cloud.wait(cloud.service.act(cloud.caller(), "core", K.DEPLOY).id)
    assert retry.state == OperationState.SUCCEEDED, retry.error
    assert "stack update" in [s.name for s in retry.steps]
    gone = cloud.wait(cloud.service.dispose(cloud.caller(), "core").id)
    assert gone.state == OperationState.SUCCEEDED
    assert heat.disposed == [failed.stack_id]
    assert cloud.store.get_instance(instance.id).outputs == {}


def test_options_are_checked_when_asked_not_when_run(cloud):
    with pytest.raises(InvalidInput, match="imsso.os.cidr '300.0.0.0/24' is not an IPv4 network"):
        cloud.service.create(cloud.caller(), "bad", driver="openstack", attributes={"imsso.os.cidr": "300.0.0.0/24"})
    with pytest.raises(InvalidInput, match="imsso.os.flavor is an option of driver openstack"):
        cloud.service.create(cloud.caller(), "local-one", attributes={"imsso.os.flavor": "m1.large"})
    _, op = cloud.service.create(cloud.caller(), "core", driver="openstack", then=(K.DEPLOY,))
    cloud.wait_chain(op.id)
    with pytest.raises(InvalidInput, match="imsso.os.cidr cannot change once units have addresses"):
        cloud.service.update(cloud.caller(), "core", {"imsso.os.cidr": "10.1.0.0/24"})
    op = cloud.wait(cloud.service.update(cloud.caller(), "core", {"imsso.os.flavor": "m1.large"}).id)
    assert op.state == OperationState.SUCCEEDED, op.error
    assert cloud.drivers["openstack"].applied[-1]["parameters"]["flavor"]["default"] == "m1.large"


def test_plan_shows_the_template_of_the_proposed_sizes_and_changes_nothing(cloud):
    instance, op = cloud.service.create(cloud.caller(), "core", driver="openstack", then=(K.DEPLOY,))
    cloud.wait_chain(op.id)
    before = len(cloud.drivers["openstack"].applied)
    plan = cloud.service.plan(cloud.caller(), "core", sizes={"scscf": 3})
    assert servers(plan["template"]) == ["dns-1", "pcscf-1", "scscf-1", "scscf-2", "scscf-3"]
    assert plan["action"] == "update" and plan["stack_name"] == hot.stack_name(instance)
    assert len(cloud.drivers["openstack"].applied) == before
    assert len(cloud.store.units(instance.id)) == 3  # nothing reserved
    with pytest.raises(InvalidInput, match="plans show Heat stacks"):
        _, local = cloud.service.create(cloud.caller(), "here")
        cloud.service.plan(cloud.caller(), "here")
