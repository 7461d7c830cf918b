"""One operation being run: its steps recorded as they happen, so a restart or a failure shows
exactly where it stood."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..drivers import Driver, DriverError
from ..model import Instance, Operation, OperationError, OperationKind, StepRecord, utcnow
from ..profiles import Profile
from ..store import Store


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

    @contextmanager
    def step(self, name: str) -> Iterator[StepRecord]:
        self.check_cancelled(f"step '{name}'")
        record = StepRecord(name=name, state="running", started_at=utcnow().isoformat())
        self.op.steps.append(record)
        self.store.save_operation(self.op)
        try:
            yield record
        except (StepFailed, Cancelled) as stop:  # a step inside this one failed or was not begun
            record.state = "failed" if isinstance(stop, StepFailed) else "cancelled"
            record.finished_at = utcnow().isoformat()
            self.store.save_operation(self.op)
            raise
        except Exception as exc:  # recorded with its cause, then the operation fails
            record.state, record.finished_at = "failed", utcnow().isoformat()
            cause = exc.cause if isinstance(exc, DriverError) else type(exc).__name__
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            self.store.save_operation(self.op)
            raise StepFailed(OperationError(step=name, message=message, cause=cause)) from exc
        record.state, record.finished_at = "done", utcnow().isoformat()
        self.store.save_operation(self.op)
        self.event("step", f"{self.op.kind.value}: {name}" + (f": {record.detail}" if record.detail else ""),
                   {"operation": self.op.id})

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
