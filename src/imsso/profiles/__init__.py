"""Profiles are data: a folder per IMS variant with profile.yaml and its config templates.

The types are in `types`, the schema in `schema`, the reading and the `ProfileRegistry` in
`loader`. The server builds one registry and hands it to whoever needs profiles; the module-level
`load` and `available` below delegate to a default registry (the built-in profiles, and
IMSSO_PROFILES_DIR before them) for the callers not yet handed one.
"""

from __future__ import annotations

import os
from pathlib import Path

from .loader import BUILTIN_DIR, NAME_RE, ProfileRegistry, read
from .schema import ProfileError
from .types import CREDENTIALS, Port, Profile, Role

__all__ = [
    "BUILTIN_DIR",
    "CREDENTIALS",
    "NAME_RE",
    "Port",
    "Profile",
    "ProfileError",
    "ProfileRegistry",
    "Role",
    "available",
    "default_registry",
    "load",
    "profiles_dirs",
]


def profiles_dirs() -> list[Path]:
    extra = os.environ.get("IMSSO_PROFILES_DIR")
    return ([Path(extra)] if extra else []) + [BUILTIN_DIR]


_registries: dict[tuple[Path, ...], ProfileRegistry] = {}


def default_registry() -> ProfileRegistry:
    """The registry of `profiles_dirs()`, one per set of folders (as the environment says now)."""
    dirs = tuple(profiles_dirs())
    if dirs not in _registries:
        _registries[dirs] = ProfileRegistry(dirs)
    return _registries[dirs]


def available() -> list[str]:
    return default_registry().available()


def load(name: str) -> Profile:
    """The profile, read once per process: an edited profile takes effect at the next start."""
    return default_registry().load(name)


def _read(folder: Path) -> Profile:
    """A profile folder read and checked, outside any registry (kept for existing callers)."""
    return read(folder)
