"""The hostile-input drill's counting (bench/drills/hostile_kit.py) fails the drill when a door lets something
through: an accepted spec, a 5xx, an unclear refusal, a CLI traceback, a key written to Redis."""

from __future__ import annotations

from typing import Any

import pytest

from bench.drills import hostile_kit
from bench.drills.hostile_kit import Tally, keyspace
from bench.drills.outcome import Outcome
from bench.drills.surfaces import Answer
from tasks.errors import SpecRejected
from tests import hostile_inputs as hostile
from yoloq.client import Client

pytestmark = pytest.mark.integration


def _outcome(tally: Tally) -> Outcome:
    outcome = Outcome(name="hostile", faults="", jobs=tally.tried)
    tally.report(outcome)
    return outcome


def test_a_refused_spec_passes_and_an_accepted_one_is_lost(wiped: Client) -> None:
    tally = Tally("client")
    with pytest.raises(SpecRejected) as refused:
        wiped.submit({**hostile.BASES["probe"], "seconds": -1})
    tally.refused_with(str(refused.value), "seconds -1")
    assert _outcome(tally).passed
    handle = wiped.submit(hostile.BASES["probe"])  # a door that let this one through would be counted
    tally.accepted.append(handle.job_id)
    outcome = _outcome(tally)
    assert (outcome.lost, outcome.passed) == (1, False)


def test_http_answers_are_classified() -> None:
    tally = Tally("http")
    tally.answered(Answer(400, {"error": "invalid job spec: x"}, 0.0, ""), "clear")
    assert _outcome(tally).passed
    tally.answered(Answer(500, {"error": "internal error"}, 0.0, ""), "5xx")
    tally.answered(Answer(201, {"job_id": "j1"}, 0.0, ""), "accepted")
    tally.answered(Answer(400, "<html>Bad Request</html>", 0.0, ""), "not JSON")
    tally.answered(Answer(400, {"error": "two\nlines"}, 0.0, ""), "two lines")
    outcome = _outcome(tally)
    assert outcome.lost == 2 and len(outcome.problems) == 3
    assert tally.figures()["by_status"] == {"201": 1, "400": 3, "500": 1}


def test_the_cli_is_run_as_a_process(services: Any) -> None:
    tally = Tally("cli")
    tally.ran(["submit", "probe", "--team", "vision", "--seconds", "x"], services.env())  # click: exit 2
    tally.ran(["submit", "probe", "--team", "Bad Team"], services.env())  # SpecRejected: exit 1, one line
    assert tally.refused == 2 and _outcome(tally).passed and tally.statuses == {1: 1, 2: 1}


def test_cli_exits_are_classified() -> None:
    tally = Tally("cli")
    tally.exited(1, "", "yoloq: error: invalid job spec: x\n", "typed")
    tally.exited(2, "", "Usage: yoloq submit probe [OPTIONS]\nError: No such option: --x\n", "usage")
    assert tally.refused == 2
    tally.exited(0, '{"job_id": "j1"}', "", "accepted")
    tally.exited(1, "", "Traceback (most recent call last):\n  ...\nOSError: boom\n", "traceback")
    tally.exited(1, "", "yoloq: error: one\ntwo\n", "two lines")
    tally.exited(1, "half", "yoloq: error: x\n", "stdout too")
    outcome = _outcome(tally)
    assert outcome.lost == 1 and len(tally.crashes) == 1 and len(tally.unclear) == 2 and not outcome.passed


def test_a_key_written_or_changed_fails_the_drill(wiped: Client) -> None:
    redis = wiped.registry.client
    before = keyspace(redis)
    outcome = Outcome(name="hostile", faults="", jobs=0)
    hostile_kit.unchanged(outcome, before, keyspace(redis))
    assert outcome.passed
    redis.set("yoloq:written-by-a-refused-input", "1")
    redis.sadd("yoloq:pre-approved", "someone")
    hostile_kit.unchanged(outcome, before, keyspace(redis))
    assert not outcome.passed and len(outcome.problems) == 2
