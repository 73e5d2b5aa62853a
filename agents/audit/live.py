"""Live projections for `/metrics` and `/status`: the audit topic folded with the core's
`Projection` — the same fold `replay` uses, so live and replayed figures cannot disagree.

Prometheus names (the spec's metrics, in Prometheus' conventions):
* `connector_failure_count_total{tenant}` — failure episodes detected
* `connector_recovered_total{tenant}` — episodes recovered
* `connector_open_incidents{tenant}`
* `connector_time_to_recover_seconds{tenant}` — histogram of MTTR; mean = sum / count
* `mean_time_to_recover_seconds{tenant,quantile}` — mean (quantile="mean") and p50/p90/p99
* `connector_failed{tenant}`, `connector_unacknowledged_incidents{tenant}`
* `connector_dead_letters_total`, `connector_late_pings_total`, `connector_inputs_total`,
  `connector_inputs_lag`
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streams.models import AuditEvent
from streams.projections import Projection, group_totals, tenant_key
from streams.state import Phase
from streams.timefmt import iso_from_ms

MTTR_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)


class LiveProjection:
    """Folds audit events as they are read; re-deliveries (sequence at or below the head
    already applied) are skipped, so at-least-once reading counts every event once."""

    def __init__(self) -> None:
        self.projection = Projection()
        self.heads: dict[str, int] = {}
        self.duplicates = 0

    def apply(self, event: AuditEvent) -> bool:
        head = self.heads.get(event.connector_id, 0)
        if event.sequence <= head:
            self.duplicates += 1
            return False
        self.heads[event.connector_id] = event.sequence
        self.projection.apply(event)
        return True

    def status(self, tenant: str | None = None) -> dict[str, Any]:
        connectors = []
        for connector_id, record in sorted(self.projection.records.items()):
            if tenant is not None and tenant_key(record.tenant_id) != tenant:
                continue
            connectors.append(
                {
                    "connector_id": connector_id,
                    "tenant_id": record.tenant_id,
                    "phase": record.phase.value,
                    "flapping": record.flapping,
                    "incident_id": record.incident_id if record.phase is Phase.FAILED else None,
                    "failure": record.failure,
                    "attempts": record.attempts,
                    "incident_open": record.incident_open,
                    "acknowledged": record.acknowledged,
                    "last_event_at": iso_from_ms(record.last_occurred_at),
                    "sequence": record.sequence,
                }
            )
        incidents = [
            {
                "incident_id": e.incident_id,
                "connector_id": e.connector_id,
                "tenant_id": e.tenant_id,
                "failure": e.failure,
                "opened_at": iso_from_ms(e.opened_at or e.detected_at),
                "acknowledged": e.acknowledged_at is not None,
                "acknowledged_by": e.acknowledged_by,
            }
            for e in self.projection.episodes.values()
            if e.incident_open and (tenant is None or tenant_key(e.tenant_id) == tenant)
        ]
        return {"connectors": connectors, "open_incidents": incidents}


class FoldCollector(Collector):
    def __init__(self, live: LiveProjection, counters: Mapping[str, int]) -> None:
        self.live = live
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        episodes = list(self.live.projection.episodes.values())
        by_tenant = group_totals(episodes, "tenant")
        failures = CounterMetricFamily(
            "connector_failure_count", "Failure episodes detected", labels=["tenant"]
        )
        recovered = CounterMetricFamily(
            "connector_recovered", "Failure episodes recovered", labels=["tenant"]
        )
        open_incidents = GaugeMetricFamily(
            "connector_open_incidents", "Incidents open (need a human)", labels=["tenant"]
        )
        mttr = GaugeMetricFamily(
            "mean_time_to_recover_seconds",
            "MTTR from the audit log: mean and nearest-rank percentiles",
            labels=["tenant", "quantile"],
        )
        for tenant, totals in by_tenant.items():
            failures.add_metric([tenant], totals.failure_count)
            recovered.add_metric([tenant], totals.recovered_count)
            open_incidents.add_metric([tenant], totals.open_incidents)
            summary = totals.mttr_seconds
            for name, value in (
                ("mean", summary.mean),
                ("0.5", summary.p50),
                ("0.9", summary.p90),
                ("0.99", summary.p99),
            ):
                if value is not None:
                    mttr.add_metric([tenant, name], value)
        failed = GaugeMetricFamily(
            "connector_failed", "Connectors in a failure episode now", labels=["tenant"]
        )
        unacknowledged = GaugeMetricFamily(
            "connector_unacknowledged_incidents",
            "Open incidents nobody acknowledged",
            labels=["tenant"],
        )
        failed_now: dict[str, int] = {}
        for record in self.live.projection.records.values():
            if record.phase is Phase.FAILED:
                key = tenant_key(record.tenant_id)
                failed_now[key] = failed_now.get(key, 0) + 1
        for tenant in sorted(set(failed_now) | set(by_tenant)):
            failed.add_metric([tenant], failed_now.get(tenant, 0))
        waiting: dict[str, int] = {}
        for episode in episodes:
            if episode.incident_open and episode.acknowledged_at is None:
                key = tenant_key(episode.tenant_id)
                waiting[key] = waiting.get(key, 0) + 1
        for tenant in sorted(set(waiting) | set(by_tenant)):
            unacknowledged.add_metric([tenant], waiting.get(tenant, 0))
        yield failures
        yield recovered
        yield open_incidents
        yield failed
        yield unacknowledged
        yield mttr
        yield self._histogram(episodes)
        for name, help_text in (
            ("dead_letters", "Inputs sent to the dead-letter topic"),
            ("late_pings", "Pings older than the last applied check"),
            ("inputs", "Decider inputs processed"),
        ):
            counter = CounterMetricFamily(f"connector_{name}", help_text)
            counter.add_metric([], self.counters.get(name, 0))
            yield counter
        lag = GaugeMetricFamily(
            "connector_inputs_lag", "Decider inputs waiting on this worker's partitions"
        )
        lag.add_metric([], self.counters.get("inputs_lag", 0))
        yield lag

    def _histogram(self, episodes: list[Any]) -> Metric:
        family = HistogramMetricFamily(
            "connector_time_to_recover_seconds",
            "Time to recover per failure episode",
            labels=["tenant"],
        )
        per_tenant: dict[str, list[float]] = {}
        for episode in episodes:
            if episode.mttr_ms is not None:
                per_tenant.setdefault(tenant_key(episode.tenant_id), []).append(
                    episode.mttr_ms / 1000
                )
        for tenant, values in sorted(per_tenant.items()):
            buckets = [
                (str(bound), sum(1 for v in values if v <= bound)) for bound in MTTR_BUCKETS_S
            ]
            buckets.append(("+Inf", len(values)))
            family.add_metric([tenant], buckets, sum(values))
        return family


def metrics_registry(live: LiveProjection, counters: Mapping[str, int]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FoldCollector(live, counters))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
