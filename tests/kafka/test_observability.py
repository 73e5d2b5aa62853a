"""/metrics, /status, `status`, alert rules and dashboard — and live figures equal to a
replay of the audit log."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.projections import Projection, group_totals
from tests.kafka.harness import (
    Namespace,
    Worker,
    metric_samples,
    read_audit,
    wait_caught_up,
    wait_for,
    web_get,
)

pytestmark = pytest.mark.kafka

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture
def busy_worker(ns: Namespace, tmp_path: Path) -> Iterator[Worker]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults: {max_retries: 0}\n")
    worker = Worker(ns, policy=policy).start()
    pings = []
    for index, (tenant, outage_s) in enumerate(
        [("acme", 3.5), ("acme", 7.25), ("globex", 1.0), (None, 12.0)]
    ):
        connector = f"OBS-{index}"
        base = 1_800_000_000_000 + index * 100_000
        pings.append(
            {
                "connector_id": connector,
                "tenant_id": tenant,
                "status": "unhealthy",
                "failure": "timeout",
                "checked_at": base,
            }
        )
        pings.append(
            {
                "connector_id": connector,
                "tenant_id": tenant,
                "status": "healthy",
                "checked_at": base + int(outage_s * 1000),
            }
        )
    pings.append(
        {
            "connector_id": "OBS-OPEN",
            "tenant_id": "acme",
            "status": "unhealthy",
            "failure": "auth",
            "retryable": False,
            "checked_at": 1_800_000_500_000,
        }
    )
    path = tmp_path / "pings.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pings))
    assert ns.cli("publish", "--file", str(path)).returncode == 0
    wait_caught_up(ns)
    yield worker
    worker.kill()


def test_live_metrics_equal_a_replay_of_the_audit_log(ns: Namespace, busy_worker: Worker) -> None:
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=3)
    replay = group_totals(Projection().apply_all(events).episodes.values(), "tenant")

    def live() -> dict[str, float] | None:
        values = metric_samples(web_get(busy_worker, "/metrics").decode())
        seen = values.get('connector_failure_count_total{tenant="acme"}')
        return values if seen == replay["acme"].failure_count else None

    values = wait_for(live, 30, "the live fold to see every event")
    for tenant, totals in replay.items():
        assert values[f'connector_failure_count_total{{tenant="{tenant}"}}'] == totals.failure_count
        assert values[f'connector_recovered_total{{tenant="{tenant}"}}'] == totals.recovered_count
        assert values[f'connector_open_incidents{{tenant="{tenant}"}}'] == totals.open_incidents
        mean = totals.mttr_seconds.mean
        if mean is not None:
            key = f'mean_time_to_recover_seconds{{quantile="mean",tenant="{tenant}"}}'
            assert values[key] == pytest.approx(mean, abs=0.0005)  # to the millisecond
    assert replay["acme"].mttr_seconds.mean == pytest.approx((3.5 + 7.25) / 2)
    assert replay["_platform"].mttr_seconds.p50 == 12.0
    assert values['connector_unacknowledged_incidents{tenant="acme"}'] == 1
    assert values['connector_time_to_recover_seconds_count{tenant="acme"}'] == 2


def test_status_is_filtered_by_tenant(ns: Namespace, busy_worker: Worker) -> None:
    wait_for(
        lambda: len(json.loads(web_get(busy_worker, "/status"))["connectors"]) == 5,
        30,
        "every connector on /status",
    )
    acme = json.loads(web_get(busy_worker, "/status?tenant=acme"))
    assert {c["connector_id"] for c in acme["connectors"]} == {"OBS-0", "OBS-1", "OBS-OPEN"}
    assert [i["connector_id"] for i in acme["open_incidents"]] == ["OBS-OPEN"]
    globex = web_get(busy_worker, "/status?tenant=globex").decode()
    assert "acme" not in globex
    assert "OBS-OPEN" not in globex
    assert json.loads(web_get(busy_worker, "/healthz"))["ready"] is True
    shown = ns.cli("status", "--tenant", "acme", "--web-port", str(busy_worker.web_port))
    assert shown.returncode == 0, shown.stderr
    assert "OBS-OPEN" in shown.stdout
    assert "OBS-2" not in shown.stdout
    assert "open incidents: 1" in shown.stdout
    # in pages: two at a time, the next after the last shown
    first = json.loads(web_get(busy_worker, "/status?limit=2"))
    assert len(first["connectors"]) == 2
    assert first["connectors_total"] == 5
    after = first["next_after"]
    assert after == first["connectors"][-1]["connector_id"]
    rest = json.loads(web_get(busy_worker, f"/status?limit=10&after={after}"))
    assert len(rest["connectors"]) == 3
    assert rest["next_after"] is None
    with pytest.raises(urllib.error.HTTPError) as refused:
        web_get(busy_worker, "/status?limit=0")
    assert refused.value.code == 400
    assert "limit must be" in json.loads(refused.value.read())["error"]
    paged = ns.cli("status", "--limit", "2", "--web-port", str(busy_worker.web_port))
    assert paged.returncode == 0, paged.stderr
    assert f"2 of 5 connectors shown; the next: --after {after}" in paged.stdout


def test_alert_rules_and_dashboard_use_only_exposed_metrics(busy_worker: Worker) -> None:
    exposed = {
        re.split(r"[{ ]", line)[0]
        for line in web_get(busy_worker, "/metrics").decode().splitlines()
        if line and not line.startswith("#")
    }
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    dashboard = json.loads((DEPLOY / "grafana" / "connector-recovery.json").read_text())
    expressions = re.findall(r"expr: (.+)", alerts) + [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ]
    text = "\n".join(expressions)
    used = set(re.findall(r"\b(connector_[a-z_]+|mean_time_to_recover_seconds)\b", text))
    assert used
    assert used <= exposed, used - exposed


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: scripts/test.sh installs Debian's prometheus")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    rules = DEPLOY / "prometheus"
    checked = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "7 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=rules,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
