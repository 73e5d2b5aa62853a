"""P3 memory: peak RSS of `connector-recovery replay --archive` (the streamed fold) over
archives of growing size, a straight-line fit, and its extrapolation to 10,000,000 events.

The archives are P3's generated log copied under fresh connector ids, each copy chained
anew (valid hashes, so the fold does all its work). Sizes: `CR_BENCH_MEMORY_SIZES`
(comma-separated event counts), default what this machine replays in a few minutes.
Memory grows per event and per connector, so the shape matters: `CR_BENCH_MEMORY_EPISODES`
failure episodes per connector (default 4, P3's log: ~31 events per connector).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.audit import log as auditlog
from bench.replay import generate
from streams.chain import chain_hash
from streams.models import GENESIS_HASH, AuditEvent

DEFAULT_SIZES = "50000,150000,450000"
TARGET = 10_000_000
GIB = 1 << 30


def _renamed(text: str | None, original: str, connector: str) -> str | None:
    if text is None or not text.startswith(original):
        return text
    return connector + text[len(original) :]


def copies(template: list[AuditEvent], size: int) -> Iterator[tuple[str, AuditEvent]]:
    """`size` events: the template again and again, connector ids suffixed by the copy."""
    heads: dict[str, str] = {}
    produced = 0
    copy = 0
    while True:
        for event in template:
            if produced == size:
                return
            old, new = event.connector_id, f"{event.connector_id}-{copy}"
            fields: dict[str, Any] = {
                **event.__dict__,
                "connector_id": new,
                "event_id": _renamed(event.event_id, old, new),
                "incident_id": _renamed(event.incident_id, old, new),
                "attributes": {k: _renamed(v, old, new) or "" for k, v in event.attributes.items()},
                "prev_hash": heads.get(new, GENESIS_HASH),
            }
            fields["hash"] = chain_hash(fields["prev_hash"], fields)
            heads[new] = fields["hash"]
            produced += 1
            yield f"#{produced}", AuditEvent.model_validate(fields)
        copy += 1


def peak_rss(archive: Path) -> tuple[int, float]:
    """(maximum resident set size in bytes, seconds) of one replay of `archive`."""
    started = time.perf_counter()
    done = subprocess.run(
        [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "agents.cli",
            "replay",
            "--archive",
            str(archive),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    # 1 = findings: the last copy of the template is cut mid-chain (an incident unnotified)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"replay exited {done.returncode}:\n{done.stderr[-2000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no peak RSS in /usr/bin/time's output:\n{done.stderr}")
    return int(found.group(1)) * 1024, seconds


def main(_repeats: int) -> dict[str, Any]:
    sizes = [int(n) for n in os.environ.get("CR_BENCH_MEMORY_SIZES", DEFAULT_SIZES).split(",")]
    episodes = int(os.environ.get("CR_BENCH_MEMORY_EPISODES", "4"))
    template = generate(episodes, healthy_between=0 if episodes <= 4 else 42)
    connectors = len({event.connector_id for event in template})
    print(f"  template: {len(template):,} events, {len(template) / connectors:.0f} per connector")
    folder = Path(tempfile.mkdtemp())
    rows = []
    for size in sizes:
        archive = folder / f"audit-{size}.avro"
        auditlog.export(auditlog.LogRead("generated", copies(template, size)), archive)
        rss, seconds = peak_rss(archive)
        rows.append({"events": size, "peak_rss_bytes": rss, "seconds": seconds})
        print(f"  {size:>10,} events: peak RSS {rss / 2**20:8.1f} MiB, {size / seconds:,.0f} ev/s")
        archive.unlink()
    (x0, y0), (x1, y1) = (
        (rows[0]["events"], rows[0]["peak_rss_bytes"]),
        (rows[-1]["events"], rows[-1]["peak_rss_bytes"]),
    )
    per_event = (y1 - y0) / (x1 - x0)
    at_target = y1 + per_event * (TARGET - x1)
    print(
        f"  slope {per_event:,.0f} B/event; extrapolated to {TARGET:,} events: "
        f"{at_target / GIB:.2f} GiB (goal ≤ 1 GiB)"
    )
    return {
        "events_per_connector": len(template) / connectors,
        "runs": rows,
        "bytes_per_event": per_event,
        "extrapolated_events": TARGET,
        "extrapolated_peak_rss_bytes": at_target,
        "goal_bytes": GIB,
    }
