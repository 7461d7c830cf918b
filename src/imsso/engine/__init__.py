"""The engine runs operations in background workers, one at a time per instance, and resumes
or fails truthfully the ones a restart interrupted."""

from __future__ import annotations

import logging
import queue
import threading
import uuid

from .. import lifecycle
from ..config import Settings
from ..drivers import Driver
from ..model import (
    Conflict,
    InstanceState,
    Operation,
    OperationError,
    OperationKind,
    OperationState,
    StepRecord,
    utcnow,
)
from ..operations_table import TABLE
from ..profiles import ProfileRegistry, default_registry
from ..store import Store
from .operations import HANDLERS
from .run import Cancelled, Run, StepFailed

log = logging.getLogger("imsso.engine")
MAX_ATTEMPTS = 3  # an operation interrupted this often by restarts is failed, not tried forever


class Engine:
    def __init__(
        self,
        store: Store,
        drivers: dict[str, Driver],
        settings: Settings,
        telemetry=None,
        profiles: ProfileRegistry | None = None,
    ):
        self.store = store
        self.profiles = profiles or default_registry()
        self.telemetry = telemetry  # counts finished operations for /metrics, when given
        self.drivers = drivers
        self.settings = settings
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._subscriber_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def start(self) -> None:
        self.recover()
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"imsso-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=1)

    def subscriber_lock(self, instance_id: str) -> threading.Lock:
        """One lock per instance for "read the subscribers, write them to the units": the API and
        the operations both do it, and the later writer must not write an older list."""
        with self._locks_lock:
            return self._subscriber_locks.setdefault(instance_id, threading.Lock())

    def submit(self, op: Operation) -> None:
        self._queue.put(op.id)

    def request(self, instance, kind: OperationKind, params: dict) -> Operation:
        """Start `kind` on the instance, as a user's request or the runtime's decision does: a 409
        names the running operation (or the dispose waiting for it), a 400 says why `kind` does
        not apply now. A dispose is accepted whatever runs: see `_request_dispose`."""
        if kind == OperationKind.DISPOSE:
            return self._request_dispose(instance, params)
        if instance.current_operation_id:
            raise self._busy(instance)
        lifecycle.check_applicable(instance, kind)
        op = Operation(id=str(uuid.uuid4()), instance_id=instance.id, kind=kind, params=params)
        try:
            self.store.start_operation(op)  # Conflict when another one started meanwhile
        except Conflict as exc:
            raise self._busy(instance, exc) from None
        self.submit(op)
        cause = f" ({params['cause']})" if params.get("cause") else ""
        self.store.add_event(instance.id, "lifecycle", f"{kind.value} requested{cause}", {"operation": op.id})
        return op

    def _request_dispose(self, instance, params: dict) -> Operation:
        """A dispose runs now when the instance is free; otherwise it is queued and the running
        operation stops at its next step boundary (cancelled, and its chained operations dropped),
        then the dispose removes whatever exists. A second request answers with the same dispose."""
        existing = self.store.queued_dispose(instance.id)
        if existing is not None:
            return existing
        lifecycle.check_applicable(instance, OperationKind.DISPOSE)
        op = Operation(id=str(uuid.uuid4()), instance_id=instance.id, kind=OperationKind.DISPOSE, params=params)
        queued, current = self.store.queue_dispose(op)
        if queued.id != op.id:  # another request queued one meanwhile: that one it is
            return queued
        if current:
            self.submit(op)
            self.store.add_event(instance.id, "lifecycle", "dispose requested", {"operation": op.id})
            return op
        running = self.store.get_operation(op.params["cancels"])
        self.store.add_event(
            instance.id,
            "lifecycle",
            (
                f"dispose requested while {running.kind.value} {running.id} runs: it stops at its next "
                "step, then the dispose runs"
            ),
            {"operation": op.id, "cancels": running.id},
        )
        return op

    def _busy(self, instance, conflict: Conflict | None = None) -> Conflict:
        """The 409 for a request on a busy instance, naming a waiting dispose before all else."""
        dispose = self.store.queued_dispose(instance.id)
        if dispose is not None:
            return Conflict(
                f"instance '{instance.name}' is being disposed of: dispose {dispose.id} is "
                f"{dispose.state.value} (GET /v1/operations/{dispose.id})",
                {"operation": dispose.id, "kind": OperationKind.DISPOSE.value},
            )
        if conflict is not None:
            return conflict
        running = self.store.get_operation(instance.current_operation_id)
        return Conflict(
            f"operation {running.id} ({running.kind.value}) is running on instance "
            f"'{instance.name}': wait for it to finish (GET /v1/operations/{running.id})",
            {"operation": running.id, "kind": running.kind.value},
        )

    def recover(self) -> None:
        """Queue again what was queued or running when the orchestrator stopped. A dispose queued
        behind another operation is not: that operation hands the instance over when it ends."""
        for op in self.store.operations([OperationState.RUNNING, OperationState.QUEUED]):
            if op.state == OperationState.QUEUED and self._waits_its_turn(op):
                continue
            if op.state == OperationState.RUNNING:
                op.steps.append(
                    StepRecord(
                        "resumed after a restart of the orchestrator",
                        "done",
                        utcnow().isoformat(),
                        utcnow().isoformat(),
                    )
                )
                self.store.save_operation(op)
                self.store.add_event(
                    op.instance_id,
                    "lifecycle",
                    f"{op.kind.value} {op.id} resumed after a restart",
                    {"operation": op.id},
                )
            self._queue.put(op.id)

    def _waits_its_turn(self, op: Operation) -> bool:
        """A dispose queued behind an operation that is still to finish."""
        holder = self.store.get_instance(op.instance_id).current_operation_id
        if op.kind != OperationKind.DISPOSE or holder in (None, op.id):
            return False
        return self.store.get_operation(holder).state in (OperationState.QUEUED, OperationState.RUNNING)

    def _work(self) -> None:
        while True:
            op_id = self._queue.get()
            if op_id is None:
                return
            try:
                self.run(op_id)
            except Exception:  # a bug must not kill the worker; the operation shows it
                log.exception("operation %s crashed the worker", op_id)

    def run(self, op_id: str) -> None:
        op = self.store.get_operation(op_id)
        if op.state not in (OperationState.QUEUED, OperationState.RUNNING):
            return
        if not self.store.reclaim_operation(op):  # a crash between two writes of _finish
            if self._waits_its_turn(op):
                return  # the holder hands the instance over when it ends
            instance = self.store.get_instance(op.instance_id)
            op.state, op.finished_at = OperationState.FAILED, utcnow()
            op.error = OperationError(
                "resume", f"another operation took over the instance after a restart ({instance.current_operation_id})"
            )
            self.store.save_operation(op)
            return
        instance = self.store.get_instance(op.instance_id)
        op.attempts += 1
        if op.attempts > MAX_ATTEMPTS:
            self._finish(
                op,
                instance,
                OperationError("resume", f"interrupted {op.attempts - 1} times by restarts of the orchestrator"),
            )
            return
        try:
            run = Run(
                self.store,
                self.drivers[instance.driver],
                self.profiles.load(instance.profile),
                instance,
                op,
                self.subscriber_lock(instance.id),
            )
            run.check_cancelled("its first step")  # e.g. a provision chained after a cancelled deploy
            self._mark_running(op, instance)
            HANDLERS[op.kind](run)
        except Cancelled as stop:
            self._finish(op, instance, None, stop)
            return
        except StepFailed as failure:
            self._finish(op, instance, failure.error)
            return
        except Exception as exc:  # outside any step: still recorded, never swallowed
            log.exception("operation %s failed outside a step", op.id)
            self._finish(op, instance, OperationError("setup", str(exc) or type(exc).__name__, type(exc).__name__))
            return
        self._finish(op, instance, None)

    def _mark_running(self, op: Operation, instance) -> None:
        op.state, op.started_at = OperationState.RUNNING, op.started_at or utcnow()
        self.store.save_operation(op)
        instance.state = lifecycle.RUNNING_STATE[op.kind]
        instance.stack_state = self._stack_state(instance, op, "IN_PROGRESS")
        self.store.save_instance(instance)
        self.store.add_event(instance.id, "lifecycle", f"{op.kind.value} started", {"operation": op.id})

    def _finish(
        self, op: Operation, instance, error: OperationError | None, cancelled: Cancelled | None = None
    ) -> None:
        instance = self.store.get_instance(instance.id)  # the handler may have saved changes
        op.finished_at = utcnow()
        if cancelled is not None:
            error = self._cancel(op, instance, cancelled)
            message = f"{op.kind.value} cancelled before {cancelled.before}: dispose {cancelled.dispose_id} runs next"
        elif error is None:
            op.state = OperationState.SUCCEEDED
            instance.state = lifecycle.state_after(instance, op.kind, self._has_units(instance))
            instance.stack_state = self._stack_state(instance, op, "COMPLETE")
            instance.failed_operation_id = None
            message = f"{op.kind.value} succeeded"
        else:
            op.state, op.error = OperationState.FAILED, error
            instance.state = InstanceState.FAILED
            instance.stack_state = self._stack_state(instance, op, "FAILED")
            instance.failed_operation_id = op.id
            message = f"{op.kind.value} failed at '{error.step}': {error.message}"
        if op.kind == OperationKind.PROVISION and error is None:
            instance.provisioned = True
        events = [
            (
                "lifecycle" if error is None or cancelled else "failure",
                message,
                {"operation": op.id, **({"error": error.__dict__} if error else {})},
            )
        ]
        follow = self._follow_up(op, instance, events) if error is None else None

        def yield_to(dispose: Operation) -> None:
            """A dispose waits: it comes next, and what was chained after `op` is dropped."""
            if follow is not None:
                op.params.pop("followed_by", None)
                events[:] = [e for e in events if e[2].get("operation") != follow.id]
            then = op.params.get("then") or []
            if then and (error is None or cancelled):
                events.append(
                    (
                        "lifecycle",
                        f"{', '.join(then)} after {op.kind.value} dropped: dispose {dispose.id} was requested",
                        {"operation": op.id, "dispose": dispose.id},
                    )
                )

        # One transaction: the operation, the instance and its next operation change together, so
        # a crash never leaves an instance held by a finished operation or free between the two.
        nxt = self.store.finish_operation(op, instance, events, follow, yield_to)
        if self.telemetry is not None:
            self.telemetry.operation_finished(op)
        if nxt:
            self.submit(nxt)

    def _cancel(self, op: Operation, instance, stop: Cancelled) -> OperationError:
        """Record `op` as failed at step "cancelled"; the instance is the dispose's from now on."""
        now = utcnow().isoformat()
        op.steps.append(StepRecord("cancelled", "failed", now, now, f"before {stop.before}"))
        op.state = OperationState.FAILED
        op.error = OperationError("cancelled", str(stop), f"dispose {stop.dispose_id} was requested")
        instance.state = InstanceState.DISPOSING
        instance.stack_state = lifecycle.stack_state(OperationKind.DISPOSE, "IN_PROGRESS")
        return op.error

    def _follow_up(self, op: Operation, instance, events: list) -> Operation | None:
        """The operation asked to follow `op` (e.g. provision after deploy), if it applies."""
        if not op.params.get("then"):
            return None
        kind, rest = OperationKind(op.params["then"][0]), op.params["then"][1:]
        try:
            lifecycle.check_applicable(instance, kind)
        except Exception as exc:  # say so, do not hide it
            events.append(("failure", f"{kind.value} after {op.kind.value} not started: {exc}", {"operation": op.id}))
            return None
        follow = Operation(
            id=str(uuid.uuid4()), instance_id=instance.id, kind=kind, params={"then": rest, "after": op.id}
        )
        op.params = {**op.params, "followed_by": follow.id}
        events.append(("lifecycle", f"{kind.value} requested after {op.kind.value}", {"operation": follow.id}))
        return follow

    def _has_units(self, instance) -> bool:
        return bool(self.store.units(instance.id))

    def _stack_state(self, instance, op: Operation, phase: str) -> str:
        # Provisioning configures what exists, and an update before any deploy changes only the
        # spec: Heat would see no stack action for either (the operation table says which).
        change = TABLE[op.kind].stack_change
        if change == "never" or change == "with units" and not self._has_units(instance):
            return instance.stack_state
        return lifecycle.stack_state(op.kind, phase)
