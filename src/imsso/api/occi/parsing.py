"""Parse OCCI requests: GFD.185 text/occi and text/plain, GFD.226 JSON.

Parsing is strict about structure but tolerant of whitespace, so a client's
mistake comes back as an OcciSyntaxError naming the header, the bad part and
what would have been accepted, instead of being half-understood.
"""

from __future__ import annotations

import functools
import json
import math
import re
import string
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

from .model import (
    OCCI_JSON,
    TEXT_OCCI,
    TEXT_PLAIN,
    AttributeValue,
    Category,
    Link,
    OcciSyntaxError,
    Request,
    UnsupportedMediaType,
)

T = TypeVar("T")

# Header names compared case-insensitively (RFC 7230); errors use the spec's casing.
_OCCI_HEADERS = {
    "category": "Category",
    "link": "Link",
    "x-occi-attribute": "X-OCCI-Attribute",
    "x-occi-location": "X-OCCI-Location",
}
_JSON_TYPES = (OCCI_JSON, "application/json")
ACCEPTED_REQUEST_TYPES = (TEXT_OCCI, TEXT_PLAIN, OCCI_JSON)

_ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*\Z")
_TERM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_INT = re.compile(r"-?\d+\Z")
_FLOAT = re.compile(r"-?(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?\Z|-?\d+[eE][+-]?\d+\Z")
_ATTRIBUTE_SPEC_TOKEN = re.compile(r"\s*([^\s{}]+)(?:\{([^{}]*)\})?\s*")
_CATEGORY_PARAMS = ("scheme", "class", "title", "rel", "location", "attributes", "actions")
_CATEGORY_CLASSES = ("kind", "mixin", "action")
# Quoted-pair escapes beyond RFC 7230's "\x means x": line breaks have no other
# way into a header, so the renderer writes them as \n and we read them back;
# \uXXXX and \UXXXXXXXX carry what a header cannot (text/occi is ASCII).
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_HEX_ESCAPES = {"u": 4, "U": 8}
_QUOTED_RUN = re.compile(r'[^"\\]+')
_SPACE = re.compile(r"\s*")
# C0 controls but tab, DEL, C1 controls and the Unicode line breaks: a value holding one could
# end a line of a text rendering, so it is refused on input and escaped on output. Unpaired
# surrogates too (JSON's "\ud800"): no UTF-8 response could carry them.
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

# Bounds on what one request may carry; the body itself is bounded by the web layer.
MAX_ATTRIBUTES = 200
MAX_ITEMS = 200  # categories, links and locations, each
MAX_VALUE = 8 * 1024  # characters of one attribute value
MAX_NAME = 255  # characters of one attribute name
MAX_NUMBER = 64  # characters of a bare number
MAX_SHOWN = 120  # characters of the client's text quoted back in an error
_INT_RANGE = (-(2**63), 2**63 - 1)

_ATTRIBUTE_EXPECTED = "expected name=value with the value a quoted string, a number or true/false"
_NAME_EXPECTED = (
    f"expected a lowercase name of at most {MAX_NAME} characters: dot-separated parts made of"
    " letters, digits, '_' and '-', each starting with a letter, such as mcn.endpoint.maas"
)
_CATEGORY_EXPECTED = 'expected term; scheme="http://...#"; class="kind", "mixin" or "action"'
_LINK_EXPECTED = (
    'expected <target>; rel="scheme#term" with optional self="...", category="..." and name=value attributes'
)
_LOCATION_EXPECTED = "expected a URI or path such as /orchestrator/default, several separated by commas"
_TYPE_ID_EXPECTED = (
    "expected a type identifier: the scheme then the term, such as http://example.com/occi/service#orchestrator"
)


def parse_request(headers: Sequence[tuple[str, str]], content_type: str | None, body: str) -> Request:
    """Read the OCCI content of a request from its headers and body.

    OCCI headers are read whatever the content type; non-OCCI headers (auth,
    tenant, ...) are ignored. A blank body is never an error, so clients that
    send a stray Content-Type on GET/DELETE still work.
    """
    media_type = _media_type(content_type)
    has_body = bool(body.strip())
    if has_body:
        _check_request_type(media_type)
    collected = _Collected()
    for name, value in headers:
        canonical = _OCCI_HEADERS.get(name.strip().lower())
        if canonical is not None:
            collected.add_field(canonical, value, canonical)
    if has_body and media_type in ("", TEXT_PLAIN):
        # No Content-Type: text/plain is OCCI's fallback rendering.
        for where, canonical, value in _body_fields(body):
            collected.add_field(canonical, value, where)
    elif has_body and media_type in _JSON_TYPES:
        _parse_json_body(body, collected)
    # text/occi carries everything in headers; its body (often "OK") is ignored.
    return collected.request()


def split_type_id(type_id: str) -> tuple[str, str]:
    """Split "http://example.com/occi#term" into (scheme incl. '#', term)."""
    scheme, sep, term = type_id.strip().rpartition("#")
    if not sep or not scheme or not _TERM.match(term) or any(c.isspace() for c in scheme):
        raise ValueError(f"cannot parse type identifier '{shown(type_id)}' - {_TYPE_ID_EXPECTED}")
    return scheme + sep, term


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _check_request_type(media_type: str) -> None:
    if media_type in ("", TEXT_PLAIN, TEXT_OCCI, *_JSON_TYPES):
        return
    raise UnsupportedMediaType(
        f"cannot read a request body of type '{media_type}'; accepted: text/occi (OCCI data in"
        " headers), text/plain (Category/Link/X-OCCI-Attribute/X-OCCI-Location lines in the body)"
        " and application/occi+json"
    )


class _Collected:
    """Accumulates a request's parts from every header and body line."""

    def __init__(self) -> None:
        self.categories: list[Category] = []
        self.attributes: dict[str, AttributeValue] = {}
        self.links: list[Link] = []
        self.locations: list[str] = []

    def add_field(self, canonical: str, value: str, where: str) -> None:
        bad = CONTROL.search(value)
        if bad:
            raise OcciSyntaxError(
                f"{where}: {_what(bad.group())} at position {bad.start() + 1} - OCCI fields"
                " hold printable text and tabs only"
            )
        if canonical == "Category":
            self.extend(self.categories, _parse_categories(value, where), "categories", where)
        elif canonical == "Link":
            self.extend(self.links, _parse_links(value, where), "links", where)
        elif canonical == "X-OCCI-Attribute":
            for name, attribute in _parse_attributes(value, where):
                self.add_attribute(name, attribute, where)
        else:
            self.extend(self.locations, _parse_locations(value, where), "locations", where)

    def add_attribute(self, name: str, value: AttributeValue, where: str) -> None:
        # A repeated name would silently drop one of the client's values.
        if name in self.attributes:
            raise OcciSyntaxError(
                f"{where}: attribute '{name}' is given more than once - give each attribute once per request"
            )
        if len(self.attributes) >= MAX_ATTRIBUTES:
            raise OcciSyntaxError(
                f"{where}: attribute '{name}' is one too many - a request carries at most {MAX_ATTRIBUTES}"
            )
        problem = value_problem(value)
        if problem:
            raise OcciSyntaxError(f"{where}: attribute '{name}' {problem}")
        self.attributes[name] = value

    def extend(self, found: list[T], items: list[T], what: str, where: str) -> None:
        if len(found) + len(items) > MAX_ITEMS:
            raise OcciSyntaxError(f"{where}: more than {MAX_ITEMS} {what} - send at most {MAX_ITEMS} per request")
        found.extend(items)

    def request(self) -> Request:
        return Request(
            categories=tuple(self.categories),
            attributes=dict(self.attributes),
            links=tuple(self.links),
            locations=tuple(self.locations),
        )


def value_problem(value: AttributeValue) -> str:
    """Why an attribute value cannot be accepted ("" when it can): bounded, printable."""
    if isinstance(value, str):
        if len(value) > MAX_VALUE:
            return f"holds {len(value)} characters - a value holds at most {MAX_VALUE}"
        bad = CONTROL.search(value)
        if bad:
            return (
                f"holds the {_what(bad.group())} at position {bad.start() + 1}"
                " - values hold printable text and tabs only"
            )
    elif isinstance(value, float) and not math.isfinite(value):
        return f"holds {value!r} - numbers must be finite"
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return "holds a whole number beyond 64 bits - send it as a quoted string"
    return ""


def _what(char: str) -> str:
    kind = "unpaired surrogate" if 0xD800 <= ord(char) <= 0xDFFF else "control character"
    return f"{kind} {char!r}"  # repr: escaped, one line


def shown(text: str) -> str:
    """The client's text as an error quotes it: escaped (one line) and cut short."""
    text = CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + f"... ({len(text)} characters)"


# --- text/plain body ------------------------------------------------------


def _body_fields(body: str) -> Iterator[tuple[str, str, str]]:
    """Yield (where, header name, value) per body field, unfolding indented lines."""
    pending: tuple[int, str, list[str]] | None = None  # line number, header name, value parts
    # Lines end at LF or CRLF only: other characters str.splitlines breaks on are refused later.
    for number, line in enumerate(body.split("\n"), start=1):
        line = line.removesuffix("\r")
        if pending is not None and line[:1] in (" ", "\t") and line.strip():
            # RFC 822 style continuation, as in the spec's multi-line examples
            pending[2].append(line.strip())
            continue
        if pending is not None:
            yield _body_where(pending[0], pending[1]), pending[1], " ".join(pending[2])
        pending = (number, *_body_field(number, line)) if line.strip() else None
    if pending is not None:
        yield _body_where(pending[0], pending[1]), pending[1], " ".join(pending[2])


def _body_field(number: int, line: str) -> tuple[str, list[str]]:
    name, sep, value = line.partition(":")
    canonical = _OCCI_HEADERS.get(name.strip().lower())
    if not sep or canonical is None:
        raise OcciSyntaxError(
            f"text/plain body line {number}: cannot parse '{shown(line.strip())}' - expected lines"
            " 'Category: ...', 'Link: ...', 'X-OCCI-Attribute: ...' or 'X-OCCI-Location: ...'"
        )
    return canonical, [value]


def _body_where(number: int, canonical: str) -> str:
    return f"text/plain body line {number}, {canonical}"


# --- the scanner shared by the header grammars ----------------------------


def _match_end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where a pattern that matches the empty string (`\\s*`, `[^...]*`) stops from `pos`."""
    found = pattern.match(text, pos)
    return found.end() if found else pos


class _Cursor:
    """Walks one header value; remembers where the current item began so an
    error can quote just that item, not the whole header."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        self.pos = 0
        self.item_start = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_space(self) -> None:
        self.pos = _match_end(_SPACE, self.text, self.pos)

    def take(self, char: str) -> bool:
        self.skip_space()
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def next_item(self) -> bool:
        """Move to the next comma-separated item; False when none is left."""
        while self.take(","):
            pass
        self.skip_space()
        self.item_start = self.pos
        return not self.at_end()

    def end_item(self, expected: str) -> None:
        self.skip_space()
        if not self.at_end() and self.peek() != ",":
            self.fail("cannot parse", expected)

    def bare(self, stops: str) -> str:
        start = self.pos
        self.pos = _match_end(_run_until(stops), self.text, start)
        return self.text[start : self.pos].strip()

    def quoted(self) -> str:
        """Read a quoted-string at the cursor, undoing backslash escapes."""
        self.pos += 1  # the opening quote
        out: list[str] = []
        text = self.text
        while self.pos < len(text):
            run = _QUOTED_RUN.match(text, self.pos)
            if run:  # everything up to the next quote or backslash, in one step
                out.append(run.group())
                self.pos = run.end()
                continue
            if text[self.pos] == '"':
                self.pos += 1
                return "".join(out)
            if self.pos + 1 >= len(text):
                break  # a backslash ending the value
            escaped = text[self.pos + 1]
            if escaped in _HEX_ESCAPES:
                out.append(self._hex_escape(escaped))
            else:
                out.append(_ESCAPES.get(escaped, escaped))
                self.pos += 2
        self.fail(
            "unterminated quoted string in",
            'expected a closing " (write a literal quote as \\" and a backslash as \\\\)',
        )

    def _hex_escape(self, escaped: str) -> str:
        """The character \\uXXXX or \\UXXXXXXXX stands for ("u" or "U" without its digits); moves past it."""
        width = _HEX_ESCAPES[escaped]
        digits = self.text[self.pos + 2 : self.pos + 2 + width]
        if len(digits) == width and all(c in string.hexdigits for c in digits):
            code = int(digits, 16)
            if code > sys.maxunicode or 0xD800 <= code <= 0xDFFF:
                self.fail(f"escape \\{escaped}{digits} is not a character in", _ATTRIBUTE_EXPECTED)
            self.pos += 2 + width
            return chr(code)
        self.pos += 2
        return escaped

    def item(self) -> str:
        """The current item as the client wrote it, for error messages (escaped, cut short)."""
        end = self.text.find(",", self.pos)
        return shown(self.text[self.item_start : len(self.text) if end < 0 else end].strip())

    def fail(self, problem: str, expected: str) -> NoReturn:
        raise OcciSyntaxError(f"{self.where}: {problem} '{self.item()}' - {expected}")


@functools.lru_cache(maxsize=16)
def _run_until(stops: str) -> re.Pattern[str]:
    return re.compile(f"[^{re.escape(stops)}]*")


def _value(cur: _Cursor, stops: str, expected: str) -> tuple[str, bool]:
    """Read a parameter value; returns (text, was_quoted)."""
    cur.skip_space()
    if cur.peek() == '"':
        text = cur.quoted()
        cur.skip_space()
        if not cur.at_end() and cur.peek() not in stops:
            cur.fail("unexpected text after the quoted string in", expected)
        return text, True
    text = cur.bare(stops)
    if '"' in text:
        cur.fail("cannot parse", expected)  # a stray quote, e.g. 1.2.3.4"
    return text, False


def _typed(cur: _Cursor, text: str, quoted: bool) -> AttributeValue:
    """Quoted values are strings; bare ones must be numbers or booleans."""
    if quoted:
        return text
    if text in ("true", "false"):
        return text == "true"
    if len(text) > MAX_NUMBER:
        cur.fail(
            f"a bare value of {len(text)} characters in",
            f"numbers have at most {MAX_NUMBER} characters; quote longer values",
        )
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    cur.fail("cannot parse", _ATTRIBUTE_EXPECTED)


def is_attribute_name(name: str) -> bool:
    """GFD.185: attr-name = attr-component *( "." attr-component ), checked whole, bounded."""
    return len(name) <= MAX_NAME and _ATTRIBUTE_NAME.match(name) is not None


def _check_attribute_name(cur: _Cursor, name: str) -> None:
    if not is_attribute_name(name):
        cur.fail(f"invalid attribute name '{shown(name)}' in", _NAME_EXPECTED)


def _params(cur: _Cursor, expected: str) -> list[tuple[str, str, bool]]:
    """Read `; name=value` parameters up to the end of the item.

    Names come back as written: parameter names are matched case-insensitively
    by the callers, but attribute names among them must stay exact.
    """
    params: list[tuple[str, str, bool]] = []
    seen: set[str] = set()
    while cur.take(";"):
        cur.skip_space()
        if cur.at_end() or cur.peek() in ",;":
            continue  # tolerate empty parameters and a trailing ';'
        name = cur.bare("=;,")
        if not name or not cur.take("="):
            cur.fail("cannot parse", expected)
        if name.lower() in seen:
            cur.fail(f"parameter '{name}' given twice in", expected)
        seen.add(name.lower())
        text, quoted = _value(cur, ";,", expected)
        params.append((name, text, quoted))
    return params


def _items(value: str, where: str, parse_one: Callable[[_Cursor], T], expected: str) -> list[T]:
    """The comma-separated items of one header value, each read by `parse_one`."""
    cur = _Cursor(value, where)
    found: list[T] = []
    while cur.next_item():
        if len(found) >= max(MAX_ITEMS, MAX_ATTRIBUTES):  # stop here, not after reading all of them
            cur.fail(f"more than {len(found)} items in one field, from", f"send at most {len(found)}")
        found.append(parse_one(cur))
        cur.end_item(expected)
    return found


# --- Category --------------------------------------------------------------


def _parse_categories(value: str, where: str) -> list[Category]:
    return _items(value, where, _category, _CATEGORY_EXPECTED)


def _category(cur: _Cursor) -> Category:
    term = cur.bare(";,")
    if not _TERM.match(term):
        cur.fail("missing term in" if not term else f"invalid term '{term}' in", _CATEGORY_EXPECTED)
    params = {name.lower(): text for name, text, _ in _params(cur, _CATEGORY_EXPECTED)}
    for name in params:
        if name not in _CATEGORY_PARAMS:
            cur.fail(f"unknown parameter '{name}' in", "accepted parameters: " + ", ".join(_CATEGORY_PARAMS))
    scheme = params.get("scheme", "")
    if not scheme or any(c.isspace() for c in scheme):
        cur.fail("missing scheme in" if not scheme else "invalid scheme in", _CATEGORY_EXPECTED)
    cls = params.get("class", "").lower()
    if cls and cls not in _CATEGORY_CLASSES:
        cur.fail(f"unknown class '{cls}' in", _CATEGORY_EXPECTED)
    return Category(
        term=term,
        scheme=scheme,
        cls=cls,
        title=params.get("title"),
        rel=params.get("rel"),
        location=params.get("location"),
        attributes=_attribute_specs(cur, params.get("attributes", "")),
        actions=_action_ids(cur, params.get("actions", "")),
    )


def _attribute_specs(cur: _Cursor, text: str) -> tuple[str, ...]:
    """Parse 'a.b c.d{required} e{immutable required}' into normalised specs."""
    specs = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _ATTRIBUTE_SPEC_TOKEN.match(text, pos)
        if match is None:
            cur.fail(f"cannot parse attribute list '{shown(text)}' in", _CATEGORY_EXPECTED)
        name, props = match.group(1), (match.group(2) or "").split()
        _check_attribute_name(cur, name)
        if any(p not in ("required", "immutable") for p in props):
            spec = match.group(0).strip()
            cur.fail(f"attribute '{shown(spec)}' has an unknown property in", "accepted: {required}, {immutable}")
        specs.append(name + ("{" + " ".join(sorted(set(props))) + "}" if props else ""))
        pos = match.end()
    return tuple(specs)


def _action_ids(cur: _Cursor, text: str) -> tuple[str, ...]:
    for action in text.split():
        try:
            split_type_id(action)
        except ValueError:
            cur.fail(f"invalid action '{action}' in", _TYPE_ID_EXPECTED)
    return tuple(text.split())


# --- X-OCCI-Attribute ------------------------------------------------------


def _parse_attributes(value: str, where: str) -> list[tuple[str, AttributeValue]]:
    return _items(value, where, _attribute, _ATTRIBUTE_EXPECTED)


def _attribute(cur: _Cursor) -> tuple[str, AttributeValue]:
    name = cur.bare("=,;")
    if not name or not cur.take("="):
        cur.fail("cannot parse", _ATTRIBUTE_EXPECTED)
    _check_attribute_name(cur, name)
    text, quoted = _value(cur, ",;", _ATTRIBUTE_EXPECTED)
    value = _typed(cur, text, quoted)
    cur.take(";")  # the spec's own examples end some values with ';'
    return name, value


# --- Link --------------------------------------------------------------------


def _parse_links(value: str, where: str) -> list[Link]:
    return _items(value, where, _link, _LINK_EXPECTED)


def _link(cur: _Cursor) -> Link:
    if not cur.take("<"):
        cur.fail("cannot parse", _LINK_EXPECTED)
    end = cur.text.find(">", cur.pos)
    target = cur.text[cur.pos : end].strip() if end >= 0 else ""
    if not target:
        cur.fail("missing <target> in", _LINK_EXPECTED)
    cur.pos = end + 1
    known: dict[str, str] = {}
    attributes: dict[str, AttributeValue] = {}
    for name, text, quoted in _params(cur, _LINK_EXPECTED):
        if name.lower() in ("rel", "self", "category"):
            known[name.lower()] = text
        else:
            _check_attribute_name(cur, name)
            attributes[name] = _typed(cur, text, quoted)
            problem = value_problem(attributes[name])
            if problem:
                cur.fail(f"link attribute '{name}' {problem}, in", _LINK_EXPECTED)
    return Link(
        target=target,
        rel=known.get("rel", ""),
        self_location=known.get("self"),
        category=known.get("category"),
        attributes=attributes,
    )


# --- X-OCCI-Location -------------------------------------------------------


def _parse_locations(value: str, where: str) -> list[str]:
    locations = []
    for part in value.split(","):
        location = part.strip()
        if not location:
            continue
        if any(c.isspace() or c in '"<>' for c in location):
            raise OcciSyntaxError(f"{where}: cannot parse '{shown(location)}' - {_LOCATION_EXPECTED}")
        locations.append(location)
    return locations


# --- application/occi+json (GFD.226) ---------------------------------------

_JSON_WHERE = "application/occi+json body"
_RESOURCE_KEYS = ("kind", "mixins", "attributes", "actions", "id", "links", "title", "summary")
_ACTION_KEYS = ("action", "attributes")
_LINK_KEYS = ("kind", "mixins", "attributes", "actions", "id", "source", "target", "title", "rel")


def _parse_json_body(body: str, collected: _Collected) -> None:
    doc = _load_json(body)
    if isinstance(doc, dict) and "resources" in doc:
        doc = _single_resource(doc)
    if not isinstance(doc, dict):
        _json_fail(
            f"expected an object, got {_json_type(doc)}",
            'send a resource {"kind": ..., "attributes": {...}} or an action {"action": ..., "attributes": {...}}',
        )
    if "action" in doc:
        _json_action(doc, collected)
    else:
        _json_resource(doc, collected)


def _load_json(body: str) -> Any:
    try:
        return json.loads(body, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise OcciSyntaxError(
            f"{_JSON_WHERE}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except RecursionError:
        _json_fail("nested too deeply", "a resource is an object of flat attributes, a few levels deep")
    except ValueError as err:  # e.g. an integer of thousands of digits
        _json_fail(f"cannot read a number: {shown(str(err))}", "send numbers of at most 64 bits")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _json_fail(f"key '{shown(key)}' is given more than once", "give each key once per object")
        result[key] = value
    return result


def _no_constant(name: str) -> NoReturn:
    _json_fail(f"'{name}' is not a JSON number", "send finite numbers only")


def _single_resource(doc: dict[str, Any]) -> Any:
    resources = doc["resources"]
    if set(doc) != {"resources"} or not isinstance(resources, list) or len(resources) != 1:
        _json_fail(
            "a request may carry exactly one resource",
            'send {"resources": [ {...} ]} with one entry, or the resource object itself',
        )
    return resources[0]


def _json_action(doc: dict[str, Any], collected: _Collected) -> None:
    _json_keys(doc, _ACTION_KEYS, "an action invocation")
    collected.categories.append(_json_category(doc["action"], "action", "action"))
    _json_attributes(doc.get("attributes", {}), collected)


def _json_resource(doc: dict[str, Any], collected: _Collected) -> None:
    _json_keys(doc, _RESOURCE_KEYS, "a resource")
    if "kind" in doc:
        collected.categories.append(_json_category(doc["kind"], "kind", "kind"))
    mixins = [_json_category(mixin, "mixin", "mixins") for mixin in _json_list(doc, "mixins")]
    collected.extend(collected.categories, mixins, "categories", _JSON_WHERE)
    _json_attributes(doc.get("attributes", {}), collected)
    # GFD.226 lifts the core title and summary out of the attributes.
    for key in ("title", "summary"):
        if key in doc:
            collected.add_attribute(f"occi.core.{key}", _json_scalar(key, doc[key]), _JSON_WHERE)
    links = [_json_link(item) for item in _json_list(doc, "links")]
    collected.extend(collected.links, links, "links", _JSON_WHERE)


def _json_category(type_id: Any, cls: str, key: str) -> Category:
    if not isinstance(type_id, str):
        _json_fail(f"'{key}' holds {_json_type(type_id)}", _TYPE_ID_EXPECTED)
    try:
        scheme, term = split_type_id(type_id)
    except ValueError as err:
        raise OcciSyntaxError(f"{_JSON_WHERE}: '{key}': {err}") from None
    if CONTROL.search(type_id):
        _json_fail(f"'{key}' holds a control character", _TYPE_ID_EXPECTED)
    return Category(term=term, scheme=scheme, cls=cls)


def _json_attributes(attributes: Any, collected: _Collected) -> None:
    for name, value in _json_attribute_items(attributes).items():
        collected.add_attribute(name, value, _JSON_WHERE)


def _json_attribute_items(attributes: Any) -> dict[str, AttributeValue]:
    if not isinstance(attributes, dict):
        _json_fail(
            f"'attributes' holds {_json_type(attributes)}",
            'expected an object such as {"mcn.endpoint.maas": "160.85.4.50"}',
        )
    result: dict[str, AttributeValue] = {}
    for name, value in attributes.items():
        if not is_attribute_name(name):
            _json_fail(f"invalid attribute name '{shown(name)}'", _NAME_EXPECTED)
        result[name] = _json_scalar(name, value)
        problem = value_problem(result[name])
        if problem:
            _json_fail(f"attribute '{name}' {problem}", "send a string, a number or true/false")
    return result


def _json_scalar(name: str, value: Any) -> AttributeValue:
    if isinstance(value, (bool, int, float, str)):
        return value
    _json_fail(
        f"attribute '{name}' holds {_json_type(value)}",
        "expected a string, a number or true/false;"
        ' use flat dotted names such as "mcn.endpoint.maas", not nested objects',
    )


def _json_link(item: Any) -> Link:
    if isinstance(item, str):
        return Link(target=_json_location(item))
    if not isinstance(item, dict):
        _json_fail(f"a link holds {_json_type(item)}", "expected a link object or a link location")
    _json_keys(item, _LINK_KEYS, "a link")
    target, target_kind = _json_kinded_uri(item.get("target"))
    rel = item.get("rel", target_kind)
    category = item.get("kind")
    if not isinstance(rel, str) or not (category is None or isinstance(category, str)):
        _json_fail("a link's 'rel' and 'kind' must be strings", _TYPE_ID_EXPECTED)
    attributes = _json_attribute_items(item.get("attributes", {}))
    if CONTROL.search(rel) or CONTROL.search(category or ""):
        _json_fail("a link's 'rel' or 'kind' holds a control character", _TYPE_ID_EXPECTED)
    return Link(target=_json_location(target), rel=rel, category=category, attributes=attributes)


def _json_location(location: str) -> str:
    if CONTROL.search(location) or len(location) > MAX_VALUE:
        _json_fail(f"link target '{shown(location)}' is not a location", _LOCATION_EXPECTED)
    return location


def _json_kinded_uri(value: Any) -> tuple[str, str]:
    """Read a link end: a location string or {"location": ..., "kind": ...}."""
    if isinstance(value, str) and value:
        return value, ""
    if isinstance(value, dict) and isinstance(value.get("location"), str) and value["location"]:
        kind = value.get("kind", "")
        if set(value) <= {"location", "kind"} and isinstance(kind, str):
            return value["location"], kind
    _json_fail("a link needs a 'target'", 'expected "target": "/path" or {"location": "/path", "kind": "scheme#term"}')


def _json_list(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        _json_fail(f"'{key}' holds {_json_type(value)}", "expected an array")
    return value


def _json_keys(doc: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    for key in doc:
        if key not in allowed:
            _json_fail(f"unknown key '{shown(key)}' in {what}", "accepted keys: " + ", ".join(allowed))


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _json_fail(problem: str, expected: str) -> NoReturn:
    raise OcciSyntaxError(f"{_JSON_WHERE}: {problem} - {expected}")
