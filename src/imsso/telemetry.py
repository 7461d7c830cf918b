"""The orchestrator's own figures for Prometheus: operations by kind and result and their
durations, runtime decisions, and units and instances by state (read from the store at scrape)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .model import Operation
from .store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Telemetry:
    def __init__(self, store: Store):
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "imsso_operations", "Operations finished, by kind and result", ["kind", "result"], registry=self.registry
        )
        self.durations = Histogram(
            "imsso_operation_duration_seconds",
            "Time from start to end of operations, by kind",
            ["kind"],
            registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.decisions = Counter(
            "imsso_decisions",
            "Decisions of the runtime loop told as events, by policy and action",
            ["policy", "action"],
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store))

    def operation_finished(self, op: Operation) -> None:
        self.operations.labels(op.kind.value, op.state.value).inc()
        if op.started_at and op.finished_at:
            self.durations.labels(op.kind.value).observe((op.finished_at - op.started_at).total_seconds())

    def decision(self, policy: str, action: str) -> None:
        self.decisions.labels(policy, action).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StoreCollector:
    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        units = GaugeMetricFamily("imsso_units", "Units by role and state", labels=["role", "state"])
        for role, state, count in self.store.count_units():
            units.add_metric([role, state], count)
        instances = GaugeMetricFamily("imsso_instances", "Instances by state", labels=["state"])
        for state, count in self.store.count_instances():
            instances.add_metric([state], count)
        return [units, instances]
