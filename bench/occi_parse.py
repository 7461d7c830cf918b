#!/usr/bin/env python3
"""How the OCCI parser's time grows with its input, next to a linear floor over the same text.

Usage: .venv/bin/python bench/occi_parse.py [--max-mib 1] [--repeat 3]

For each shape of input and each size (doubling up to --max-mib), the best of --repeat parses is
printed, with the floor: one regular-expression pass over the same text (linear by construction)
and the ratio parse/floor. A linear parser keeps that ratio about constant as the size grows; a
quadratic one doubles it with every doubling of the size. The last column is the ratio at this size
over the ratio at the smallest size. Figures are printed, never asserted.

Shapes: one quoted value full of escapes in an X-OCCI-Attribute header (the 1 MiB header value),
a text/plain body of N attributes, a text/plain field folded over N lines, a Category whose
attributes="..." lists N names, and an application/occi+json body of N attributes. The request
limits (at most 200 attributes, 8 KiB per value) are lifted for the run, so the parser itself is
measured, not the refusal.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable

from imsso.api.occi import OcciSyntaxError, parse_request, parsing

SERVICE = "http://schemas.mobile-cloud-networking.eu/occi/service#"
FLOOR = re.compile(r'[^"\\,;=\n]+|.', re.S)  # one step per run of plain text or per syntax character


def escaped_value(size: int) -> tuple[list[tuple[str, str]], str | None, str]:
    chunk = 'ab\\"c\\\\d, e;f='  # quotes, backslashes and separators inside the quoted string
    value = (chunk * (size // len(chunk) + 1))[:size].rstrip("\\")
    return [("X-OCCI-Attribute", f'mcn.big="{value}"')], "text/occi", ""


def many_attributes(size: int) -> tuple[list[tuple[str, str]], str | None, str]:
    line = 'X-OCCI-Attribute: mcn.a{}="160.85.4.50"\n'
    return [], "text/plain", "".join(line.format(i) for i in range(size // len(line.format(0))))


def folded_field(size: int) -> tuple[list[tuple[str, str]], str | None, str]:
    line = "  , mcn.b{}=1\n"
    count = size // len(line.format(0))
    return [], "text/plain", "X-OCCI-Attribute: mcn.a=1\n" + "".join(line.format(i) for i in range(count))


def category_attributes(size: int) -> tuple[list[tuple[str, str]], str | None, str]:
    name = "mcn.attr{}{{required}} "
    names = "".join(name.format(i) for i in range(size // len(name.format(0))))
    return [("Category", f'orchestrator; scheme="{SERVICE}"; attributes="{names}"')], "text/occi", ""


def json_attributes(size: int) -> tuple[list[tuple[str, str]], str | None, str]:
    count = size // len('"mcn.a00000": "160.85.4.50", ')
    doc = {"kind": SERVICE + "orchestrator", "attributes": {f"mcn.a{i}": "160.85.4.50" for i in range(count)}}
    return [], "application/occi+json", json.dumps(doc)


SHAPES: dict[str, Callable[[int], tuple[list[tuple[str, str]], str | None, str]]] = {
    "escaped 1 header value": escaped_value,
    "text/plain attributes": many_attributes,
    "text/plain folded lines": folded_field,
    "Category attributes=": category_attributes,
    "occi+json attributes": json_attributes,
}


def best(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def parse(headers: list[tuple[str, str]], content_type: str | None, body: str) -> None:
    try:
        parse_request(headers, content_type, body)
    except OcciSyntaxError as err:  # a bench input the parser refuses measures nothing
        raise SystemExit(f"bench input refused: {err}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-mib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    parsing.MAX_ATTRIBUTES = parsing.MAX_ITEMS = 10**9  # measure the parser, not the refusal
    parsing.MAX_VALUE = 10**9
    sizes = []
    size = 16 * 1024
    while size <= args.max_mib * 1024 * 1024:
        sizes.append(size)
        size *= 2
    print(f"{'shape':26} {'bytes':>9} {'parse s':>9} {'floor s':>9} {'ratio':>7} {'growth':>7}")
    for shape, make in SHAPES.items():
        first = None
        for size in sizes:
            headers, content_type, body = make(size)
            text = body + "".join(value for _, value in headers)
            took = best(lambda: parse(headers, content_type, body), args.repeat)
            floor = best(lambda: sum(1 for _ in FLOOR.finditer(text)), args.repeat)
            ratio = took / floor
            first = first or ratio
            print(f"{shape:26} {len(text):>9} {took:>9.4f} {floor:>9.4f} {ratio:>6.2f}x {ratio / first:>6.2f}x")


if __name__ == "__main__":
    main()
