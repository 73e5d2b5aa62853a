"""Old logs still replay: an archive exported before the attribute map got typed views
(issue 15) gives the same report, states of record, verification and time travel as it did
then. The archive and what the old code made of it are committed in tests/data/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.audit import log as auditlog
from streams.chain import chain_hash
from streams.models import AuditEvent, EventType
from tests.old_archive import ARCHIVE_NAME, EXPECTED_NAME, replay, scenario

DATA = Path(__file__).resolve().parent / "data"
ARCHIVE = DATA / ARCHIVE_NAME


def test_an_archive_written_before_typed_evidence_replays_as_it_did() -> None:
    read = auditlog.read_archive(ARCHIVE)
    assert read.findings == []
    assert auditlog.check_manifest(ARCHIVE, read) == []
    expected = json.loads((DATA / EXPECTED_NAME).read_text())
    assert without_outages(json.loads(json.dumps(replay(read)))) == expected


def without_outages(replayed: dict[str, Any]) -> dict[str, Any]:
    """What outages (issue 22) and incidents' receipts (issue 23) added to a replay, checked
    and taken out: an old log has no outage, no episode in an outage group, and each
    incident's receipt is one of its connector's receipts (or none, still open)."""
    for scope in ("report", "tenant_globex"):
        outages = replayed[scope].pop("outages")
        assert (outages["count"], outages["outages"]) == (0, [])
        for incident in replayed[scope]["incidents"]:
            receipt = incident.pop("receipt")
            connector = replayed[scope]["connectors"][incident["connector_id"]]
            assert receipt is None or receipt in connector.get("receipts", [])
    for states in [replayed["records"], *(point["connectors"] for point in replayed["as_of"])]:
        for state in states.values():
            assert state.pop("outage_group", None) is None
            # the feedback path's fields (docs/outages.md): none in an old log
            assert state.pop("outage_id", None) is None
            assert state.pop("notify_at", None) is None
            assert state.pop("restarts_held", False) is False
    return replayed


def test_the_decider_still_writes_the_archived_events_byte_for_byte() -> None:
    """The wire format did not change but for the outage group each detection now records
    (issue 22): without it, the same inputs give the same attributes, hashes included."""
    archived = [event for _, event in auditlog.read_archive(ARCHIVE).events]
    written = scenario()
    detections = [e for e in written if e.type is EventType.FAILURE_DETECTED]
    # a flapping episode is the connector's own: no group
    assert all(("group" in e.attributes) == (e.failure != "flapping") for e in detections)
    assert without_groups(written) == archived


def without_groups(events: list[AuditEvent]) -> list[AuditEvent]:
    """The events with `group` taken out of their attributes, each chain hashed again."""
    heads: dict[str, str] = {}
    out = []
    for event in events:
        fields = event.model_dump()
        fields["attributes"] = {k: v for k, v in event.attributes.items() if k != "group"}
        fields["prev_hash"] = heads.get(event.connector_id, "0" * 64)
        fields["hash"] = chain_hash(fields["prev_hash"], fields)
        heads[event.connector_id] = fields["hash"]
        out.append(AuditEvent.model_validate(fields))
    return out
