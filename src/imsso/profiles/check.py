"""`imsso profile check`: a profile read through its schema, then rendered at every size it allows.

Nothing runs: the units get made-up loopback addresses and a plausible layout of paths, as the
local driver would place them, so every template sees every name it would see in a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import planning
from ..model import Instance, Unit
from .loader import read
from .schema import ProfileError
from .types import Profile

SIZES = ("min", "default", "max")
CHECK_DIR = "/var/lib/imsso/instances/check"


@dataclass
class Report:
    source: str
    profile: Profile | None = None
    problems: list[str] = field(default_factory=list)
    rendered: dict[str, dict[str, int]] = field(default_factory=dict)  # size label -> sizes

    @property
    def ok(self) -> bool:
        return not self.problems


def check_folder(folder: Path) -> Report:
    """Every problem of the profile in `folder`: its schema first, then each template at each size."""
    report = Report(str(folder / "profile.yaml"))
    try:
        report.profile = read(folder)
    except ProfileError as exc:
        report.problems += exc.problems
        return report
    profile = report.profile
    for label in SIZES:
        sizes = {name: getattr(role, label) for name, role in profile.roles.items()}
        report.rendered[label] = sizes
        seen: set[tuple[str, str]] = set()
        for error in planning.render_errors(_instance(profile, sizes), profile, _units(profile, sizes), _layout):
            if (error.template, error.message) in seen:  # the same fault in every unit of a role: once
                continue
            seen.add((error.template, error.message))
            report.problems.append(
                f"{folder / 'templates' / error.template}: at the {label} sizes "
                f"({_sizes(sizes)}), unit {error.unit} file {error.file}: {error.message}"
            )
    return report


def summary(report: Report) -> str:
    profile = report.profile
    assert profile is not None
    used = sorted({t for r in profile.roles.values() for t in r.files.values()})
    unused = sorted(set(profile.templates) - set(used))
    lines = [
        f"{profile.name}: valid ({report.source})",
        f"  roles: {', '.join(profile.roles)} (entry {profile.entry}, order {', '.join(profile.order)})",
        *(f"  rendered at the {label} sizes: {_sizes(sizes)}" for label, sizes in report.rendered.items()),
        f"  templates: {', '.join(used)}",
    ]
    if unused:
        lines.append(f"  templates no role uses: {', '.join(unused)}")
    return "\n".join(lines)


def _sizes(sizes: dict[str, int]) -> str:
    return ", ".join(f"{role} {n}" for role, n in sizes.items())


def _instance(profile: Profile, sizes: dict[str, int]) -> Instance:
    return Instance(
        id="check",
        tenant="check",
        name="check",
        profile=profile.name,
        driver="local",
        domain=profile.domain,
        sizes=dict(sizes),
        attributes={},
        secret="0" * 32,
    )


def _units(profile: Profile, sizes: dict[str, int]) -> list[Unit]:
    _, _, new = planning.desired_units(profile, sizes, [])
    return [
        Unit(
            id=f"u{n}",
            instance_id="check",
            name=planning.unit_name(role, index),
            role=role,
            index=index,
            address=f"127.100.0.{n + 1}",
        )
        for n, (role, index) in enumerate(new)
    ]


def _layout(instance: Instance, unit_name: str) -> planning.UnitLayout:
    return planning.UnitLayout(
        unit_dir=f"{CHECK_DIR}/units/{unit_name}",
        subscribers_db=f"{CHECK_DIR}/subscribers.sqlite",
        hss_subscribers=f"{CHECK_DIR}/hss-subscribers.json",
        internal_net="127.100.0.0/24",
        manager_address="127.0.0.1",
    )
