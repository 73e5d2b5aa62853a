"""`/metrics` and `/status` from the live views' state (`streams.views.FleetView`): the fold
`replay` uses, kept as state whose size follows the fleet.

Prometheus names (the spec's metrics, in Prometheus' conventions):
* `connector_failure_count_total{tenant}` — failure episodes detected
* `connector_recovered_total{tenant}` — episodes recovered
* `connector_open_incidents{tenant}`
* `connector_time_to_recover_seconds{tenant}` — histogram of MTTR; mean = sum / count
* `mean_time_to_recover_seconds{tenant,quantile}` — mean (quantile="mean", exact) and
  p50/p90/p99 (within 1%: `streams.views.RELATIVE_ACCURACY`; `report` gives them exactly)
* `connector_failed{tenant}`, `connector_unacknowledged_incidents{tenant}`
* `connector_open_outages{tenant}`, `connector_outages_total{tenant}`,
  `connector_outage_time_to_recover_seconds{tenant}` (a summary: `_count` resolved, `_sum`)
* `connector_dead_letters_total`, `connector_late_pings_total`, `connector_inputs_total`,
  `connector_inputs_lag`
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from streams.projections import tenant_key
from streams.state import Phase
from streams.timefmt import iso_from_ms
from streams.views import MTTR_BUCKETS_S, FleetView, TenantFigures

STATUS_PAGE = 1000  # connectors per `/status` answer unless `limit` says otherwise
STATUS_PAGE_MAX = 10_000


def status(
    view: FleetView,
    tenant: str | None = None,
    *,
    limit: int = STATUS_PAGE,
    after: str | None = None,
) -> dict[str, Any]:
    """`/status`: the fleet's (or one tenant key's) connectors by id, `limit` of them after
    the id `after` (a page: `next_after` is the id to ask after for the next, None at the
    end), how many there are in all, and every open incident. A page costs what it shows,
    not the fleet: a 300,000-connector worker answers in milliseconds and its event loop,
    which also processes inputs, is not held by a listing nobody reads."""
    ids = view.connector_ids()
    connectors: list[dict[str, Any]] = []
    next_after = None
    for index in range(bisect_right(ids, after) if after is not None else 0, len(ids)):
        record = view.records[ids[index]]
        if tenant is not None and tenant_key(record.tenant_id) != tenant:
            continue
        if len(connectors) == limit:
            next_after = connectors[-1]["connector_id"]
            break
        connectors.append(
            {
                "connector_id": record.connector_id,
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
        for e in sorted(
            view.open_incidents(tenant), key=lambda e: (e.opened_at or 0, e.incident_id)
        )
    ]
    outages = [
        {
            "outage_id": o.outage_id,
            "group": o.group,
            "tenant_id": o.tenant_id,
            "opened_at": iso_from_ms(o.opened_at),
            "connectors": len(set(o.connectors)),
        }
        for o in sorted(view.open_outages(tenant), key=lambda o: (o.opened_at, o.outage_id))
    ]
    return {
        "connectors": connectors,
        "connectors_total": view.connectors_in(tenant),
        "next_after": next_after,
        "open_incidents": incidents,
        "open_outages": outages,
    }


class FoldCollector(Collector):
    """`view`: the live views as they are at each scrape (a follower replaces its view when
    it restores a snapshot)."""

    def __init__(self, view: Callable[[], FleetView], counters: Mapping[str, int]) -> None:
        self.view = view
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        view = self.view()
        by_tenant = dict(sorted(view.tenants.items()))
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
            "MTTR from the audit log: the mean, and nearest-rank percentiles within 1%",
            labels=["tenant", "quantile"],
        )
        opened: dict[str, int] = {}
        waiting: dict[str, int] = {}
        for episode in view.open_incidents():
            key = tenant_key(episode.tenant_id)
            opened[key] = opened.get(key, 0) + 1
            if episode.acknowledged_at is None:
                waiting[key] = waiting.get(key, 0) + 1
        for tenant, figures in by_tenant.items():
            failures.add_metric([tenant], figures.failures)
            recovered.add_metric([tenant], figures.recovered)
            open_incidents.add_metric([tenant], opened.get(tenant, 0))
            for name, percentile in (("mean", None), ("0.5", 50), ("0.9", 90), ("0.99", 99)):
                value = figures.mttr_seconds(percentile)
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
        failed_now = view.failed_now()
        for tenant in sorted(set(failed_now) | set(by_tenant)):
            failed.add_metric([tenant], failed_now.get(tenant, 0))
        for tenant in sorted(set(waiting) | set(by_tenant)):
            unacknowledged.add_metric([tenant], waiting.get(tenant, 0))
        outages = GaugeMetricFamily(
            "connector_open_outages",
            "Outages open: connectors failing for one cause (docs/outages.md)",
            labels=["tenant"],
        )
        opened_outages = CounterMetricFamily(
            "connector_outages", "Outages opened", labels=["tenant"]
        )
        open_now: dict[str, int] = {}
        for outage in view.open_outages():
            key = tenant_key(outage.tenant_id)
            open_now[key] = open_now.get(key, 0) + 1
        # every tenant with figures gets its outage series, at zero if it never had one: a
        # rule or a panel over them sees 0, not "no data"
        outage_tenants = sorted(set(by_tenant) | set(view.outages_opened) | set(open_now))
        for tenant in outage_tenants:
            opened_outages.add_metric([tenant], view.outages_opened.get(tenant, 0))
            outages.add_metric([tenant], open_now.get(tenant, 0))
        outage_mttr = SummaryMetricFamily(
            "connector_outage_time_to_recover_seconds",
            "Outages resolved (count) and their times from opened to resolved (sum); mean ="
            " sum / count",
            labels=["tenant"],
        )
        for tenant in sorted(set(outage_tenants) | set(view.outages_resolved)):
            count, total_ms = view.outages_resolved.get(tenant, (0, 0))
            outage_mttr.add_metric([tenant], count_value=count, sum_value=total_ms / 1000)
        yield failures
        yield recovered
        yield outages
        yield opened_outages
        yield outage_mttr
        yield open_incidents
        yield failed
        yield unacknowledged
        yield mttr
        yield _histogram(by_tenant)
        yield from self._worker_figures()

    def _worker_figures(self) -> Iterator[Metric]:
        """A worker's own counters (zero in a process that has none)."""
        for name, help_text in (
            ("dead_letters", "Inputs sent to the dead-letter topic"),
            ("late_pings", "Pings older than the last applied check"),
            ("inputs", "Decider inputs processed"),
            ("states_evicted", "Parsed connector states dropped from the cache (CR_STATES_CACHED)"),
            ("alertmanager_posts", "Open incidents re-posted to Alertmanager (batches)"),
            ("alertmanager_post_failures", "Re-posts to Alertmanager that failed their retries"),
        ):
            counter = CounterMetricFamily(f"connector_{name}", help_text)
            counter.add_metric([], self.counters.get(name, 0))
            yield counter
        lag = GaugeMetricFamily(
            "connector_inputs_lag", "Decider inputs waiting on this worker's partitions"
        )
        lag.add_metric([], self.counters.get("inputs_lag", 0))
        yield lag
        unsent = GaugeMetricFamily(
            "connector_states_unsent_max",
            "The most new states a batch of inputs has held before writing them (CR_STATES_UNSENT)",
        )
        unsent.add_metric([], self.counters.get("states_unsent_max", 0))
        yield unsent
        if "write_buffer_bytes" in self.counters:  # a worker's (agents/worker/writebuffers.py)
            held = GaugeMetricFamily(
                "connector_table_write_buffer_bytes",
                "Bytes in the state table's RocksDB memtables (flushed once their writes stop)",
            )
            held.add_metric([], self.counters["write_buffer_bytes"])
            yield held
            flushes = CounterMetricFamily(
                "connector_table_write_buffer_flushes",
                "Partitions of the state table whose memtables were flushed once idle",
            )
            flushes.add_metric([], self.counters.get("write_buffer_flushes", 0))
            yield flushes
        if "loop_stalls" in self.counters:  # a worker's (agents/worker/looplag.py)
            stalls = CounterMetricFamily(
                "connector_event_loop_stalls",
                "Turns of the worker's event loop later than 200 ms",
            )
            stalls.add_metric([], self.counters["loop_stalls"])
            yield stalls
            longest = GaugeMetricFamily(
                "connector_event_loop_lag_max_seconds",
                "The latest the worker's event loop has run a turn since start",
            )
            longest.add_metric([], self.counters["loop_lag_max_ms"] / 1000)
            yield longest


def _histogram(by_tenant: Mapping[str, TenantFigures]) -> Metric:
    family = HistogramMetricFamily(
        "connector_time_to_recover_seconds",
        "Time to recover per failure episode",
        labels=["tenant"],
    )
    for tenant, figures in by_tenant.items():
        if not figures.recovered:
            continue
        buckets = [
            (str(bound), count)
            for bound, count in zip(MTTR_BUCKETS_S, figures.histogram, strict=True)
        ]
        buckets.append(("+Inf", figures.recovered))
        family.add_metric([tenant], buckets, figures.mttr_total_ms / 1000)
    return family


def metrics_registry(
    view: Callable[[], FleetView], counters: Mapping[str, int]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FoldCollector(view, counters))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
