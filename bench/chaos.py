#!/usr/bin/env python3
"""The long SIGKILL campaign: tests/e2e/test_chaos.py's rounds, many times over, with figures.

Usage: .venv/bin/python bench/chaos.py [--kills 100] [--seed N] [--instances 2]

Each round sends a deploy (sometimes followed at once by a DELETE), a scale or a dispose to an
`imsso serve` of its own (temporary IMSSO_DATA_DIR, 127.0.0.1:8065, units in 127.125.0.0/16,
profile sip-core), SIGKILLs it after a random delay within the request's typical duration (learnt
from the operations that ran unharmed), starts it again, waits until no operation is queued or
running, and compares the store with the processes on the machine. At the end every instance is
disposed of. Printed: the counts (kills, operations that ended, instances, refused requests,
leftovers, problems, each named), and the time from a kill to a settled orchestrator (mean,
median, max), next to a plain start of `imsso serve` as the floor. Nothing is asserted; the seed
replays a campaign.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the campaign and the server handling the tests use

from chaos import Campaign  # noqa: E402
from harness import Server  # noqa: E402

LISTEN = "127.0.0.1:8065"
POOL = "127.125.0.0/16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--instances", type=int, default=2, help="live instances at most")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"seed {seed} (replay: --seed {seed}), {args.kills} kills, up to {args.instances} instances")
    folder = Path(tempfile.mkdtemp(prefix="imsso-chaos-"))
    server = Server(folder / "imsso", LISTEN, POOL, env={"IMSSO_PROFILE": "sip-core"})
    try:
        started = time.monotonic()
        server.start()
        floor = time.monotonic() - started
        campaign = Campaign(server, seed, max_instances=args.instances)
        began = time.monotonic()
        counts = campaign.run(args.kills)
        took = time.monotonic() - began
    finally:
        server.stop()
        server.kill_units()
        shutil.rmtree(folder, ignore_errors=True)
    settle = counts.settle_seconds or [0.0]
    print(counts.summary())
    print(
        f"kill to settled: mean {statistics.mean(settle):.2f} s, median {statistics.median(settle):.2f} s, "
        f"max {max(settle):.2f} s; a plain start of imsso serve: {floor:.2f} s "
        f"(ratio of the mean {statistics.mean(settle) / floor:.1f})"
    )
    print(f"campaign: {took:.0f} s, {took / max(counts.kills, 1):.1f} s per kill")
    for line in counts.leftovers:
        print(f"leftover: {line}")
    for line in counts.problems:
        print(f"problem: {line}")
    if counts.leftovers or counts.problems:
        print("rounds (last 40):")
        for line in counts.log[-40:]:
            print(f"  {line}")


if __name__ == "__main__":
    main()
