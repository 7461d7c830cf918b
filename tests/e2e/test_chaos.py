"""SIGKILL of `imsso serve` at random moments of deploys, scales and disposes, several times in a
row, on real units: nothing forgotten, nothing stuck, nothing running that the store does not
know, nothing left after the last dispose. IMSSO_CHAOS_SEED replays a campaign, IMSSO_CHAOS_KILLS
makes it longer (bench/chaos.py runs the long version)."""

from __future__ import annotations

import os
import random

import pytest

from chaos import Campaign
from harness import Server


@pytest.fixture
def chaos_server(tmp_path):
    """An orchestrator of its own (127.0.0.1:8052, units in 127.107.0.0/16), killed at will."""
    srv = Server(tmp_path / "imsso", "127.0.0.1:8052", "127.107.0.0/16", env={"IMSSO_PROFILE": "sip-core"})
    yield srv
    srv.stop()
    srv.kill_units()


def test_sigkill_at_random_moments_forgets_nothing_and_leaves_nothing(chaos_server, capsys):
    seed = int(os.environ.get("IMSSO_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    kills = int(os.environ.get("IMSSO_CHAOS_KILLS", "7"))
    chaos_server.start()
    counts = Campaign(chaos_server, seed).run(kills)
    with capsys.disabled():  # the counts belong in CI's output, passed or not
        print(f"\n{counts.summary()} (replay: IMSSO_CHAOS_SEED={seed})")
    assert counts.kills == kills
    assert counts.operations > kills, counts.report()  # each round's request ran operations
    assert not counts.problems and not counts.leftovers, counts.report()
