"""Old logs still replay: an archive exported before the attribute map got typed views
(issue 15) gives the same report, states of record, verification and time travel as it did
then. The archive and what the old code made of it are committed in tests/data/."""

from __future__ import annotations

import json
from pathlib import Path

from agents.audit import log as auditlog
from tests.old_archive import ARCHIVE_NAME, EXPECTED_NAME, replay, scenario

DATA = Path(__file__).resolve().parent / "data"
ARCHIVE = DATA / ARCHIVE_NAME


def test_an_archive_written_before_typed_evidence_replays_as_it_did() -> None:
    read = auditlog.read_archive(ARCHIVE)
    assert read.findings == []
    assert auditlog.check_manifest(ARCHIVE, read) == []
    expected = json.loads((DATA / EXPECTED_NAME).read_text())
    assert json.loads(json.dumps(replay(read))) == expected


def test_the_decider_still_writes_the_archived_events_byte_for_byte() -> None:
    """The wire format did not change: the same inputs give the same attributes, hashes
    included."""
    archived = [event for _, event in auditlog.read_archive(ARCHIVE).events]
    assert scenario() == archived
