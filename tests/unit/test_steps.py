"""A step of an operation: its deadline, its retries of temporary errors, and what an unexpected
exception leaves on the operation and in the log."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import pytest

from imsso.drivers import DriverError
from imsso.engine.run import Run, StepFailed
from imsso.model import Instance, Operation, OperationKind, TemporaryError


class Steps:
    """Just what a Run needs of a store: the operation saved, events kept, no dispose waiting."""

    def __init__(self) -> None:
        self.saved = 0
        self.events: list[str] = []

    def save_operation(self, op: Operation) -> None:
        self.saved += 1

    def queued_dispose(self, instance_id: str) -> None:
        return None

    def add_event(self, instance_id: str, kind: str, message: str, data: Any = None) -> None:
        self.events.append(message)


@pytest.fixture
def run() -> Run:
    instance = Instance(
        id="i-1",
        tenant="t",
        name="core",
        profile="sip-core",
        driver="local",
        domain="ims.example.org",
        sizes={},
        attributes={},
    )
    op = Operation(id="op-1", instance_id=instance.id, kind=OperationKind.DEPLOY, params={})
    return Run(Steps(), None, None, instance, op, threading.Lock())  # type: ignore[arg-type]


class Flaky:
    """Raises the given errors in turn, then returns 'ok'."""

    def __init__(self, *errors: Exception):
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_a_step_without_timeout_has_no_deadline_and_records_done(run: Run):
    with run.step("reserve units") as step:
        assert step.deadline == math.inf
        step.detail = "3 units"
    record = run.op.steps[-1]
    assert (record.name, record.state, record.detail) == ("reserve units", "done", "3 units")
    assert run.store.events == ["deploy: reserve units: 3 units"]


def test_the_timeout_is_a_deadline_from_the_step_start(run: Run):
    before = time.monotonic()
    with run.step("start scscf-1", timeout=20.0) as step:
        assert before + 20.0 <= step.deadline <= time.monotonic() + 20.0


def test_a_temporary_error_is_retried_then_the_step_succeeds(run: Run):
    flaky = Flaky(TemporaryError("connection refused", "ECONNREFUSED"), TemporaryError("502 from Heat"))
    for attempt in run.step("stack create", timeout=60, retries=3, backoff=0):
        with attempt as step:
            step.detail = flaky()
    assert flaky.calls == 3
    assert run.op.steps[-1].state == "done" and run.op.steps[-1].detail == "ok"
    assert len(run.op.steps) == 1  # one step, tried three times


def test_retries_exhausted_fail_with_the_last_error(run: Run):
    flaky = Flaky(TemporaryError("first"), TemporaryError("second"), TemporaryError("last", "HTTP 503"))
    with pytest.raises(StepFailed) as failed:
        for attempt in run.step("stack create", retries=2, backoff=0):
            with attempt:
                flaky()
    assert flaky.calls == 3
    assert (failed.value.error.step, failed.value.error.message) == ("stack create", "last")
    assert failed.value.error.cause == "HTTP 503"
    assert run.op.steps[-1].state == "failed"


def test_a_permanent_error_is_not_retried(run: Run):
    flaky = Flaky(DriverError("kamailio: not found", "which kamailio"), TemporaryError("never reached"))
    with pytest.raises(StepFailed) as failed:
        for attempt in run.step("preflight", retries=5, backoff=0):
            with attempt:
                flaky()
    assert flaky.calls == 1
    assert failed.value.error.message == "kamailio: not found"
    assert failed.value.error.cause == "which kamailio"
    assert failed.value.error.location == ""  # an expected failure: no frame shown


def test_retries_stop_at_the_deadline(run: Run):
    flaky = Flaky(*[TemporaryError(f"try {n}") for n in range(10)])
    with pytest.raises(StepFailed):
        for attempt in run.step("readiness", timeout=0.05, retries=9, backoff=0.03):
            with attempt:
                flaky()
    assert flaky.calls < 10


def test_a_step_with_retries_refuses_the_single_try_form(run: Run):
    with pytest.raises(TypeError, match="for attempt in"):
        with run.step("stack create", retries=1):
            pass


def broken_helper() -> None:
    {}["missing"]  # a programming error, deep in a step


def test_an_unexpected_exception_is_logged_with_its_traceback_and_shown_on_the_operation(
    run: Run, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level(logging.ERROR, logger="imsso.engine.run"):
        with pytest.raises(StepFailed) as failed:
            for attempt in run.step("configure", retries=3, backoff=0):  # not retried either
                with attempt:
                    broken_helper()
    error = failed.value.error
    assert error.cause == "KeyError"
    assert error.location.startswith("test_steps.py:")
    line = int(error.location.rpartition(":")[2])
    assert line == broken_helper.__code__.co_firstlineno + 1
    [logged] = [r for r in caplog.records if r.name == "imsso.engine.run"]
    assert logged.exc_info is not None and logged.exc_info[0] is KeyError
    assert "configure" in logged.getMessage() and "op-1" in logged.getMessage()
    assert "broken_helper" in caplog.text  # the traceback itself


def test_a_failure_inside_an_inner_step_is_not_logged_twice(run: Run, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.ERROR, logger="imsso.engine.run"):
        with pytest.raises(StepFailed):
            with run.step("outer"):
                with run.step("inner"):
                    raise RuntimeError("boom")
    assert [s.state for s in run.op.steps] == ["failed", "failed"]
    assert len([r for r in caplog.records if r.name == "imsso.engine.run"]) == 1
