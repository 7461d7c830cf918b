"""Reading profile folders: profile.yaml checked against the schema, and the templates beside it."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from ..model import NotFound
from ..programs import Program, registry
from . import schema
from .types import Profile

BUILTIN_DIR = Path(__file__).parent
# A profile name is a folder name and nothing more: no separators, no dots in front, no "..".
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def read(folder: Path, programs: Mapping[str, Program] | None = None) -> Profile:
    """The profile in `folder`, checked: a ProfileError lists every problem of profile.yaml."""
    source = str(folder / "profile.yaml")
    try:
        raw = yaml.safe_load((folder / "profile.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise schema.ProfileError(source, [f"cannot be read: {exc}"]) from None
    templates = {p.name: p.read_text() for p in sorted((folder / "templates").glob("*")) if p.is_file()}
    problems = schema.check(raw, templates, registry() if programs is None else programs)
    if isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"] != folder.name:
        problems.append(f"name: '{raw['name']}' differs from its folder's name '{folder.name}'")
    if problems:
        raise schema.ProfileError(source, problems)
    extra = {p.name: p.read_text() for p in sorted(folder.glob("*")) if p.is_file() and p.name != "profile.yaml"}
    return schema.build(raw, templates, extra)


class ProfileRegistry:
    """The profiles of some folders, searched in order (an operator's before the built-in ones).

    Each profile is read once per registry: an edited profile takes effect at the next start."""

    def __init__(self, dirs: Iterable[Path] = (BUILTIN_DIR,)):
        self.dirs = tuple(Path(d) for d in dirs)
        self._cache: dict[str, Profile] = {}
        self._lock = threading.Lock()

    def available(self) -> list[str]:
        names: set[str] = set()
        for base in self.dirs:
            names.update(p.parent.name for p in base.glob("*/profile.yaml") if NAME_RE.match(p.parent.name))
        return sorted(names)

    def load(self, name: str) -> Profile:
        """The profile of that name. The name often comes from a tenant (JSON `profile`, OCCI
        `imsso.profile`): it is checked against a strict pattern (a plain folder name) before any
        path is built from it."""
        if not isinstance(name, str) or not NAME_RE.match(name):
            shown = name if isinstance(name, str) and name.isprintable() and len(name) <= 64 else "(not shown)"
            raise NotFound(f"unknown profile '{shown}' (available: {', '.join(self.available())})")
        with self._lock:
            if name not in self._cache:
                self._cache[name] = read(self.folder(name))
            return self._cache[name]

    def folder(self, name: str) -> Path:
        for base in self.dirs if NAME_RE.match(name) else ():
            if (base / name / "profile.yaml").is_file():
                return base / name
        raise NotFound(f"unknown profile '{name}' (available: {', '.join(self.available())})")

    def all(self) -> list[Profile]:
        return [self.load(name) for name in self.available()]
