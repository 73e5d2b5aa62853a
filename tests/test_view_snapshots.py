"""The live views' snapshot file (agents/audit/snapshots.py): what is written is read back,
and a file changed by one bit is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from unittest.mock import patch

import pytest

from agents.audit.snapshots import SnapshotError, SnapshotFile
from streams.models import AuditEvent
from tests.core.test_properties import play
from tests.core.test_views import differences, folded


def failed_fleet(connectors: int, tenant_id: str | None = "acme") -> list[AuditEvent]:
    """The logs of `connectors` connectors (F-0, F-1, …) that each failed, opening an
    episode, and were notified."""
    return [
        event
        for index in range(connectors)
        for event in play(
            [("ping", False, True, 5)] * 4 + [("notify", True), ("tick", 30)],
            connector_id=f"F-{index}",
            tenant_id=tenant_id,
        ).events
    ]


def test_a_snapshot_file_gives_back_the_view(tmp_path: Path) -> None:
    """Through the file the follower writes (agents/audit/snapshots.py): more records than
    one line holds, a digest that catches a changed byte."""
    view = folded(failed_fleet(5))
    assert len(view.records) == len(view.episodes) == 5  # failed, each with its episode
    file = SnapshotFile(tmp_path / "views.snapshot")
    with patch("agents.audit.snapshots.RECORDS_PER_LINE", 2):
        asyncio.run(file.save(view, "cluster-1", "audit", {0: 17, 1: 4}))
    restored = asyncio.run(file.load())
    assert restored is not None
    assert (restored.cluster, restored.topic, restored.offsets) == (
        "cluster-1",
        "audit",
        {0: 17, 1: 4},
    )
    assert differences(restored.view, view) == []
    # what a restored fleet holds once: each connector's id (keys of the records, episodes
    # and since-times), each tenant's id, each failure's text; and no connector's `notified`
    held = restored.view
    for episode in held.episodes.values():
        record = held.records[episode.connector_id]
        assert episode.connector_id is record.connector_id
        assert episode.incident_id is record.incident_id
    assert len({id(r.tenant_id) for r in held.records.values()}) == 1
    assert len({id(e.failure) for e in held.episodes.values()}) == 1
    assert all(not r.notified for r in held.records.values())
    data = bytearray(file.path.read_bytes())
    data[len(data) // 2] ^= 1
    file.path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"digest|unreadable"):
        asyncio.run(file.load())


def test_a_snapshot_cut_short_is_refused(tmp_path: Path) -> None:
    view = folded(play([("ping", False, True, 5)] * 4 + [("tick", 30)]).events)
    assert view.records
    file = SnapshotFile(tmp_path / "views.snapshot")
    asyncio.run(file.save(view, None, "audit", {0: 3}))
    data = file.path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 10):
        file.path.write_bytes(data[:cut])
        with pytest.raises(SnapshotError, match=r"cut short|digest|unreadable"):
            asyncio.run(file.load())
