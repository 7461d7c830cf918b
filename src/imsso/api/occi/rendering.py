"""Render OCCI responses: GFD.185 text/plain, text/occi, text/uri-list and
GFD.226 application/occi+json.

Every render_* function returns (extra headers, body). The caller sets
Content-Type to the media type it passed in; text/occi puts the OCCI data in
the extra headers, the others put it in the body.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from .model import (
    OCCI_JSON,
    TEXT_OCCI,
    TEXT_PLAIN,
    TEXT_URI_LIST,
    AttributeValue,
    Category,
    Entity,
    Link,
    NotAcceptable,
    split_attribute_spec,
)
from .parsing import CONTROL, is_attribute_name

Headers = list[tuple[str, str]]
Rendered = tuple[Headers, str]

CORE_LINK = "http://schemas.ogf.org/occi/core#link"
_TEXT_TYPES = (TEXT_PLAIN, TEXT_OCCI)
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]")
_NOT_ASCII = re.compile(r"[^\x09\x20-\x7e]")


# --- content negotiation ---------------------------------------------------


def negotiate(accept: str | None, allowed: Sequence[str]) -> str:
    """Pick the media type to answer with from an Accept header (RFC 7231).

    The most specific matching range sets a type's q; ties go to the type the
    client named most precisely, then to text/plain (GFD.185's fallback), then
    to the order of `allowed`. An absent Accept or `*/*` yields text/plain.
    """
    if not allowed:
        raise ValueError("negotiate needs at least one media type to offer")
    ranges = _accept_ranges(accept)
    if not ranges:
        return TEXT_PLAIN if TEXT_PLAIN in allowed else allowed[0]
    scored = [
        (*_quality(media_type, ranges), media_type == TEXT_PLAIN, -index, media_type)
        for index, media_type in enumerate(allowed)
    ]
    best = max(scored)
    if best[0] <= 0:
        raise NotAcceptable(f"cannot answer with any type in Accept '{accept}'; offered: {', '.join(allowed)}")
    return best[-1]


def _accept_ranges(accept: str | None) -> list[tuple[str, float]]:
    """Parse an Accept header into (media range, q); malformed ranges are skipped."""
    ranges = []
    for part in (accept or "").split(","):
        media_range, *params = [piece.strip() for piece in part.split(";")]
        if media_range.count("/") != 1:
            continue
        quality = _q_value(params)
        if quality is not None:
            ranges.append((media_range.lower(), quality))
    return ranges


def _q_value(params: list[str]) -> float | None:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return min(max(float(value.strip()), 0.0), 1.0)
            except ValueError:
                return None
    return 1.0


def _quality(media_type: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """(q, specificity) from the most specific range matching media_type."""
    best = (0.0, -1)
    main = media_type.split("/")[0]
    for media_range, quality in ranges:
        if media_range == media_type:
            specificity = 2
        elif media_range == f"{main}/*":
            specificity = 1
        elif media_range == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[1]:
            best = (quality, specificity)
    return best


# --- public renderers --------------------------------------------------------


def render_entity(entity: Entity, media_type: str) -> Rendered:
    """Render one resource instance (GET on its location)."""
    if media_type in _TEXT_TYPES:
        return _text(_entity_fields(entity), media_type)
    if media_type == OCCI_JSON:
        return [], _json_body(_entity_json(entity))
    raise _cannot_render("a resource", media_type, (TEXT_PLAIN, TEXT_OCCI, OCCI_JSON))


def render_collection(locations: Sequence[str], media_type: str, base_url: str) -> Rendered:
    """Render a listing of instance locations as absolute URIs.

    application/occi+json has no bare-location form (GFD.226 collections hold
    whole resources): use render_entities for it.
    """
    uris = [absolute_uri(base_url, location) for location in locations]
    if media_type == TEXT_URI_LIST:
        return [], "".join(uri + "\r\n" for uri in uris)  # RFC 2483 wants CRLF
    if media_type in _TEXT_TYPES:
        return _text([("X-OCCI-Location", uri) for uri in uris], media_type)
    raise _cannot_render("a list of locations", media_type, (TEXT_PLAIN, TEXT_OCCI, TEXT_URI_LIST))


def render_entities(entities: Sequence[Entity], media_type: str, base_url: str) -> Rendered:
    """Render a collection: whole resources in JSON, locations otherwise (GFD.185)."""
    if media_type == OCCI_JSON:
        return [], _json_body({"resources": [_entity_json(entity) for entity in entities]})
    return render_collection([entity.location for entity in entities], media_type, base_url)


def render_query(categories: Sequence[Category], media_type: str) -> Rendered:
    """Render the query interface (/-/): every kind, mixin and action in full."""
    if media_type in _TEXT_TYPES:
        return _text([("Category", _category_value(c, c.cls, full=True)) for c in categories], media_type)
    if media_type == OCCI_JSON:
        return [], _json_body(_query_json(categories))
    raise _cannot_render("the query interface", media_type, (TEXT_PLAIN, TEXT_OCCI, OCCI_JSON))


def render_error(message: str, media_type: str) -> Rendered:
    """Render an error message; never fails, falling back to plain text."""
    if media_type == OCCI_JSON:
        return [], _json_body({"error": message})
    # Lines stay the message's own: other controls are escaped.
    message = "\n".join(CONTROL.sub(_escape_char, line) for line in message.split("\n"))
    if media_type == TEXT_URI_LIST:
        # '#' lines are comments in a uri-list, so the body stays well formed.
        return [], "".join(f"# {line}\r\n" for line in message.splitlines() or [""])
    return [], message.rstrip("\n") + "\n"


def absolute_uri(base_url: str, location: str) -> str:
    """Join a path to the service's base URL; absolute URIs pass through."""
    if "://" in location:
        return location
    return base_url.rstrip("/") + "/" + location.lstrip("/")


def render_attribute_value(value: AttributeValue) -> str:
    """The X-OCCI-Attribute form: strings quoted, numbers and booleans bare."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return quote(str(value))


def quote(text: str) -> str:
    """An RFC 7230 quoted-string; line breaks and other controls escaped so one value stays on one line."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{CONTROL.sub(_escape_char, escaped)}"'


def attribute_name(name: str) -> str:
    """A name as a text rendering shows it: one that breaks the grammar (stored before names were
    checked, or given elsewhere) is percent-encoded, so it can neither end the line nor look like a value."""
    if is_attribute_name(name):
        return name
    return _NOT_IN_NAMES.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


def _escape_char(match: re.Match[str]) -> str:
    """The parser's escapes: \\n and \\r, else \\uXXXX (\\UXXXXXXXX beyond the BMP)."""
    code = ord(match.group())
    named = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}  # unpaired surrogates come out as \\udxxx
    return named.get(code) or (f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")


# --- text renderings -----------------------------------------------------------


def _text(fields: list[tuple[str, str]], media_type: str) -> Rendered:
    """text/plain puts fields in the body; text/occi in headers with body OK."""
    if media_type == TEXT_PLAIN:
        return [], "".join(f"{name}: {value}\n" for name, value in fields)
    return _joined_headers(fields), "OK"


def _joined_headers(fields: list[tuple[str, str]]) -> Headers:
    # GFD.185 recommends one comma-separated header per name: many frameworks
    # and clients mishandle repeated headers.
    grouped: dict[str, list[str]] = {}
    for name, value in fields:
        grouped.setdefault(name, []).append(value)
    # Header values are ASCII here: what else a value holds goes as the parser's \\u escapes.
    return [(name, _NOT_ASCII.sub(_escape_char, ", ".join(values))) for name, values in grouped.items()]


def _entity_fields(entity: Entity) -> list[tuple[str, str]]:
    fields = [("Category", _category_value(entity.kind, entity.kind.cls or "kind"))]
    fields += [("Category", _category_value(mixin, mixin.cls or "mixin")) for mixin in entity.mixins]
    fields += [("Link", _link_value(link)) for link in entity.links]
    fields += [("Link", f"<{href}>; rel={quote(action.id)}") for href, action in entity.actions]
    fields += [
        ("X-OCCI-Attribute", f"{attribute_name(name)}={render_attribute_value(value)}")
        for name, value in entity.attributes.items()
    ]
    return fields


def _category_value(category: Category, cls: str, full: bool = False) -> str:
    """A Category field value; `full` adds what only the query interface shows."""
    parts = [category.term, f"scheme={quote(category.scheme)}"]
    if cls:
        parts.append(f"class={quote(cls)}")
    if category.title:
        parts.append(f"title={quote(category.title)}")
    if full:
        optional = (
            ("rel", category.rel),
            ("location", category.location),
            ("attributes", " ".join(category.attributes)),
            ("actions", " ".join(category.actions)),
        )
        parts += [f"{name}={quote(value)}" for name, value in optional if value]
    return "; ".join(parts)


def _link_value(link: Link) -> str:
    parts = [f"<{link.target}>"]
    if link.rel:
        parts.append(f"rel={quote(link.rel)}")
    if link.self_location:
        parts.append(f"self={quote(link.self_location)}")
    if link.category:
        parts.append(f"category={quote(link.category)}")
    parts += [f"{attribute_name(name)}={render_attribute_value(value)}" for name, value in link.attributes.items()]
    return "; ".join(parts)


# --- application/occi+json (GFD.226) ---------------------------------------------


def _json_body(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


def _json_value(value: AttributeValue) -> AttributeValue:
    # JSON has no NaN/Infinity; send them as text rather than invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def _json_attributes(attributes: Any) -> dict[str, AttributeValue]:
    # GFD.226 keeps dotted names flat: "mcn.endpoint.maas", not nested objects.
    return {name: _json_value(value) for name, value in attributes.items()}


def _entity_json(entity: Entity) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": entity.kind.id}
    if entity.mixins:
        doc["mixins"] = [mixin.id for mixin in entity.mixins]
    if entity.attributes:
        doc["attributes"] = _json_attributes(entity.attributes)
    if entity.actions:
        doc["actions"] = [action.id for _, action in entity.actions]
    doc["id"] = str(entity.attributes.get("occi.core.id", entity.location))
    if entity.links:
        doc["links"] = [_link_json(entity, link) for link in entity.links]
    return doc


def _link_json(source: Entity, link: Link) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": link.category or CORE_LINK}
    if link.attributes:
        doc["attributes"] = _json_attributes(link.attributes)
    if link.self_location:
        doc["id"] = link.self_location
    doc["source"] = {"location": source.location, "kind": source.kind.id}
    doc["target"] = {"location": link.target, **({"kind": link.rel} if link.rel else {})}
    return doc


def _query_json(categories: Sequence[Category]) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {"kinds": [], "mixins": [], "actions": []}
    for category in categories:
        key = {"mixin": "mixins", "action": "actions"}.get(category.cls, "kinds")
        groups[key].append(_category_json(category, key))
    return groups


def _category_json(category: Category, group: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"term": category.term, "scheme": category.scheme}
    if category.title:
        doc["title"] = category.title
    if category.attributes:
        doc["attributes"] = _attribute_definitions(category)
    if group == "actions":
        return doc
    if category.actions:
        doc["actions"] = list(category.actions)
    if category.rel and group == "kinds":
        doc["parent"] = category.rel
    elif category.rel:
        doc["depends"] = category.rel.split()
    if category.location:
        doc["location"] = category.location
    return doc


def _attribute_definitions(category: Category) -> dict[str, dict[str, bool]]:
    definitions = {}
    for spec in category.attributes:
        name, properties = split_attribute_spec(spec)
        definitions[name] = {"mutable": "immutable" not in properties, "required": "required" in properties}
    return definitions


def _cannot_render(what: str, media_type: str, offered: Sequence[str]) -> NotAcceptable:
    return NotAcceptable(f"cannot render {what} as '{media_type}'; offered: {', '.join(offered)}")
