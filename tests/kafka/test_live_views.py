"""The live views (`/status`, `/metrics`) are a fold of the whole audit topic: after a worker
restart, and on every worker of a fleet, they equal a replay of the same topic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.kafka.harness import Namespace, Worker, metric_samples, wait_caught_up, web_get

pytestmark = pytest.mark.kafka


def publish_history(ns: Namespace, tmp_path: Path) -> None:
    """Two recovered episodes (MTTR 4 s and 10 s) and one open incident, tenant acme."""
    pings: list[dict[str, Any]] = []
    for index, outage_s in enumerate((4, 10)):
        base = 1_800_000_000_000 + index * 100_000
        for status, at in (("unhealthy", base), ("healthy", base + outage_s * 1000)):
            pings.append(
                {
                    "connector_id": f"LIVE-{index}",
                    "tenant_id": "acme",
                    "status": status,
                    "checked_at": at,
                    **({"failure": "timeout"} if status == "unhealthy" else {}),
                }
            )
    pings.append(
        {
            "connector_id": "LIVE-OPEN",
            "tenant_id": "acme",
            "status": "unhealthy",
            "failure": "auth",
            "retryable": False,
            "checked_at": 1_800_000_500_000,
        }
    )
    path = tmp_path / "pings.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pings))
    published = ns.cli("publish", "--file", str(path))
    assert published.returncode == 0, published.stderr


def replayed_totals(ns: Namespace) -> dict[str, Any]:
    report = ns.cli("report", "--format", "json", "--quiet")
    assert report.returncode == 0, report.stderr
    totals: dict[str, Any] = json.loads(report.stdout)["tenants"]["acme"]
    return totals


def assert_views_equal_replay(worker: Worker, replay: dict[str, Any]) -> None:
    """Read right after `ready`: no waiting, the views must already hold the history."""
    health = json.loads(web_get(worker, "/healthz"))
    assert health["ready"] is True
    status = json.loads(web_get(worker, "/status?tenant=acme"))
    assert [i["connector_id"] for i in status["open_incidents"]] == ["LIVE-OPEN"]
    assert {c["connector_id"] for c in status["connectors"]} == {"LIVE-0", "LIVE-1", "LIVE-OPEN"}
    values = metric_samples(web_get(worker, "/metrics").decode())
    assert values['connector_failure_count_total{tenant="acme"}'] == replay["failure_count"]
    assert values['connector_recovered_total{tenant="acme"}'] == replay["recovered_count"]
    assert values['connector_open_incidents{tenant="acme"}'] == replay["open_incidents"]
    mean = values['mean_time_to_recover_seconds{quantile="mean",tenant="acme"}']
    assert mean == pytest.approx(replay["mttr_seconds"]["mean"], abs=0.0005)


def test_views_after_a_restart_and_on_every_worker_equal_the_replay(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults: {max_retries: 0}\n")
    first = Worker(ns, name="w1", policy=policy).start()
    workers.append(first)
    publish_history(ns, tmp_path)
    wait_caught_up(ns)
    replay = replayed_totals(ns)
    assert (replay["failure_count"], replay["recovered_count"], replay["open_incidents"]) == (
        3,
        2,
        1,
    )
    assert replay["mttr_seconds"]["mean"] == pytest.approx(7.0)

    first.kill()
    restarted = Worker(ns, name="w1", policy=policy).start()
    workers.append(restarted)
    assert_views_equal_replay(restarted, replay)

    # A second worker owns other partitions, yet shows the whole fleet's view.
    second = Worker(ns, name="w2", policy=policy).start()
    workers.append(second)
    assert_views_equal_replay(second, replay)
    assert_views_equal_replay(restarted, replay)
