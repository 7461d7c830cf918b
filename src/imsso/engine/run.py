"""One operation being run: its steps recorded as they happen, so a restart or a failure shows
exactly where it stood."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..drivers import Driver, DriverError
from ..model import Instance, Operation, OperationError, OperationKind, StepRecord, TemporaryError, utcnow
from ..profiles import Profile
from ..store import Store

log = logging.getLogger(__name__)


class StepFailed(Exception):
    def __init__(self, error: OperationError):
        super().__init__(error.message)
        self.error = error


class Cancelled(Exception):
    """A dispose was requested: the operation stops at this step boundary (the dispose removes
    whatever it had created, level-based, so nothing is rolled back here)."""

    def __init__(self, dispose_id: str, before: str):
        super().__init__(f"cancelled by dispose {dispose_id}")
        self.dispose_id, self.before = dispose_id, before


@dataclass
class Run:
    store: Store
    driver: Driver
    profile: Profile
    instance: Instance
    op: Operation
    subscriber_lock: threading.Lock  # held by whoever reads the subscribers and writes them out

    def step(
        self,
        name: str,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (TemporaryError,),
        backoff: float = 1.0,
    ) -> Step:
        """A step recorded as it happens: `with run.step(name) as step:`. With retries, its body is
        tried again on `retry_on` errors: `for attempt in run.step(name, retries=2): with attempt as step:`.
        `timeout` gives the step a deadline (step.deadline) to pass to what it waits for."""
        return Step(self, name, timeout, retries, retry_on, backoff)

    def check_cancelled(self, before: str) -> None:
        """Raise Cancelled when a dispose waits for this operation (the store says so, so a
        restart does not forget it). A dispose itself is never cancelled."""
        if self.op.kind == OperationKind.DISPOSE:
            return
        dispose = self.store.queued_dispose(self.instance.id)
        if dispose is not None and dispose.id != self.op.id:
            raise Cancelled(dispose.id, before)

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.store.add_event(self.instance.id, kind, message, data)

    def save_instance(self) -> None:
        self.store.save_instance(self.instance)


@dataclass
class StepContext:
    """What a step's body sees: its record (detail is shown on the operation) and its deadline."""

    record: StepRecord
    deadline: float  # time.monotonic() seconds; inf when the step has no timeout

    @property
    def detail(self) -> str:
        return self.record.detail

    @detail.setter
    def detail(self, text: str) -> None:
        self.record.detail = text


@dataclass
class Step:
    run: Run
    name: str
    timeout: float | None
    retries: int
    retry_on: tuple[type[BaseException], ...]
    backoff: float  # seconds before the first retry, doubled at each
    _last: _Attempt | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> StepContext:
        if self.retries:
            raise TypeError(f"step '{self.name}' has retries: run it as `for attempt in run.step(...)`")
        return next(self._begin()).__enter__()

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        assert self._last is not None
        return self._last.__exit__(kind, exc, tb)

    def __iter__(self) -> Iterator[_Attempt]:
        yield from self._begin()

    def _begin(self) -> Iterator[_Attempt]:
        run = self.run
        run.check_cancelled(f"step '{self.name}'")
        record = StepRecord(name=self.name, state="running", started_at=utcnow().isoformat())
        run.op.steps.append(record)
        run.store.save_operation(run.op)
        deadline = time.monotonic() + self.timeout if self.timeout is not None else math.inf
        context = StepContext(record, deadline)
        for number in range(self.retries + 1):
            attempt = self._last = _Attempt(self, context, last=number == self.retries)
            yield attempt
            if attempt.done:
                return
            try:
                run.check_cancelled(f"retry of step '{self.name}'")
            except Cancelled:
                record.state, record.finished_at = "cancelled", utcnow().isoformat()
                run.store.save_operation(run.op)
                raise
            delay = min(self.backoff * 2**number, max(0.0, deadline - time.monotonic()))
            log.info(
                "step '%s' of %s %s: %s; attempt %d of %d in %.1f s",
                self.name,
                run.op.kind.value,
                run.op.id,
                attempt.error,
                number + 2,
                self.retries + 1,
                delay,
            )
            time.sleep(delay)


@dataclass
class _Attempt:
    """One try of a step's body: done, retried (a retry_on error before the last try) or failed."""

    step: Step
    context: StepContext
    last: bool
    done: bool = False
    error: BaseException | None = None

    def __enter__(self) -> StepContext:
        return self.context

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        run, record, name = self.step.run, self.context.record, self.step.name
        if exc is None:
            self.done = True
            record.state, record.finished_at = "done", utcnow().isoformat()
            run.store.save_operation(run.op)
            run.event(
                "step",
                f"{run.op.kind.value}: {name}" + (f": {record.detail}" if record.detail else ""),
                {"operation": run.op.id},
            )
            return False
        if isinstance(exc, (StepFailed, Cancelled)):  # a step inside this one failed or was not begun
            record.state = "failed" if isinstance(exc, StepFailed) else "cancelled"
            record.finished_at = utcnow().isoformat()
            run.store.save_operation(run.op)
            return False
        if not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit: not the step's to handle
        if isinstance(exc, self.step.retry_on) and not self.last and time.monotonic() < self.context.deadline:
            self.error = exc
            return True  # swallowed: the step tries again
        record.state, record.finished_at = "failed", utcnow().isoformat()
        run.store.save_operation(run.op)
        raise StepFailed(_error_of(run, name, exc)) from exc


def _error_of(run: Run, step: str, exc: Exception) -> OperationError:
    """The operation's error for what a step raised; an unexpected one is logged with its traceback."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(exc, (DriverError, TemporaryError)):
        return OperationError(step=step, message=message, cause=exc.cause)
    log.exception(
        "step '%s' of %s %s (instance %s) failed unexpectedly",
        step,
        run.op.kind.value,
        run.op.id,
        run.instance.name,
        exc_info=exc,
    )
    return OperationError(step=step, message=message, cause=type(exc).__name__, location=_innermost(exc))


def _innermost(exc: BaseException) -> str:
    """file:line of the frame that raised, the file named from the package down."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    path = frames[-1].filename.replace(os.sep, "/")
    shown = path[path.rindex("imsso/") :] if "imsso/" in path else os.path.basename(path)
    return f"{shown}:{frames[-1].lineno}"
