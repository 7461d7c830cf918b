"""The OCCI core types as seen on the wire (OGF GFD.183 / GFD.185 / GFD.226).

Pure data: no I/O and no web framework, so the parser and the renderers can be
tested on their own and the web layer only maps HTTP to these types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

# bool comes first on purpose: bool is an int subclass, and renderers must test
# for it before int or `true` would come out as `1`.
AttributeValue: TypeAlias = bool | int | float | str

TEXT_PLAIN = "text/plain"
TEXT_OCCI = "text/occi"
TEXT_URI_LIST = "text/uri-list"
OCCI_JSON = "application/occi+json"

# What each kind of response can be rendered as, in order of preference; pass
# these to rendering.negotiate as `allowed`.
ENTITY_MEDIA_TYPES: tuple[str, ...] = (TEXT_PLAIN, TEXT_OCCI, OCCI_JSON)
QUERY_MEDIA_TYPES: tuple[str, ...] = (TEXT_PLAIN, TEXT_OCCI, OCCI_JSON)
COLLECTION_MEDIA_TYPES: tuple[str, ...] = (TEXT_PLAIN, TEXT_OCCI, TEXT_URI_LIST)
ENTITIES_MEDIA_TYPES: tuple[str, ...] = (TEXT_PLAIN, TEXT_OCCI, TEXT_URI_LIST, OCCI_JSON)

# Markers allowed after an attribute name in a Category's attribute list,
# e.g. "mcn.endpoint.maas{required}" (GFD.185 query interface).
ATTRIBUTE_PROPERTIES = frozenset({"required", "immutable"})

_ATTRIBUTE_SPEC = re.compile(r"^(?P<name>[^{}\s]+)(?:\{(?P<props>[^{}]*)\})?$")


class OcciSyntaxError(ValueError):
    """A request that does not follow the OCCI rendering; maps to 400.

    The message names the header (or body line), quotes the bad part and says
    what is accepted, because it goes back to the client verbatim.
    """


class NotAcceptable(Exception):
    """No offered media type matches the Accept header; maps to 406."""


class UnsupportedMediaType(Exception):
    """The request body's Content-Type cannot be parsed; maps to 415."""


@dataclass(frozen=True)
class Category:
    """A kind, mixin or action, identified by scheme + term."""

    term: str
    scheme: str
    cls: str  # "kind", "mixin" or "action"; "" when a client left class out
    title: str | None = None
    rel: str | None = None  # type id of the parent kind / related mixin
    location: str | None = None  # collection path, e.g. "/orchestrator/"
    # Attribute names, each optionally marked "{required}", "{immutable}" or
    # "{immutable required}"; the markers show in the query interface.
    attributes: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()  # action type ids "scheme#term"

    @property
    def id(self) -> str:
        """The type identifier: scheme and term joined (schemes end in '#')."""
        return self.scheme + self.term

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """The attribute names without their property markers."""
        return tuple(split_attribute_spec(spec)[0] for spec in self.attributes)


@dataclass(frozen=True)
class Link:
    """An OCCI link from the rendered resource to `target` (RFC 5988 Link)."""

    target: str
    rel: str = ""  # type id(s) of the target resource, space separated
    self_location: str | None = None  # where the link instance itself lives
    category: str | None = None  # the link's kind type id
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Entity:
    """A resource instance as OCCI renders it."""

    kind: Category
    location: str  # path of the instance, e.g. "/orchestrator/default"
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    # (href, action) for each action applicable now; href is usually
    # location + "?action=" + term.
    actions: tuple[tuple[str, Category], ...] = ()
    mixins: tuple[Category, ...] = ()
    links: tuple[Link, ...] = ()


@dataclass(frozen=True)
class Request:
    """What a client sent, whatever the rendering it used."""

    categories: tuple[Category, ...] = ()
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    locations: tuple[str, ...] = ()  # X-OCCI-Location values

    def categories_of_class(self, cls: str) -> tuple[Category, ...]:
        """The categories the client marked with `cls` ("" for unmarked)."""
        return tuple(c for c in self.categories if c.cls == cls)


def split_attribute_spec(spec: str) -> tuple[str, frozenset[str]]:
    """Split "name{immutable required}" into the name and its properties."""
    match = _ATTRIBUTE_SPEC.match(spec.strip())
    if match is None:
        raise ValueError(f"bad attribute spec {spec!r}: expected name or name{{required immutable}}")
    props = frozenset((match.group("props") or "").split())
    unknown = props - ATTRIBUTE_PROPERTIES
    if unknown:
        raise ValueError(
            f"bad attribute spec {spec!r}: unknown properties {sorted(unknown)}; "
            f"accepted: {sorted(ATTRIBUTE_PROPERTIES)}"
        )
    return match.group("name"), props
