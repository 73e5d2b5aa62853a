"""The verify fold: checks a log of audit events needing nothing but the events.

Findings:
* `hash_mismatch` — the event's hash is not sha256(prev_hash || canonical bytes): altered.
* `chain_break` — prev_hash is not the hash of the connector's previous event.
* `sequence_gap` — sequences missing (dropped events).
* `out_of_order` — a sequence arrived after a later one.
* `conflicting_duplicate` — the same sequence twice with different content (tampering).
* `benign_duplicate` — an identical re-send (at-least-once delivery); informational.
* `bad_event_id` — event_id is not `{connector_id}:{sequence}`.
* `malformed_evidence` — the event's attributes do not read as its type's view (a key
  missing or a value malformed, `streams.evidence`); the chain checks go on past it.
* compliance gaps (spec: "Evidence missing: compliance gap"): `deadline_missed` (a recorded
  deadline passed with no follow-up, judged against the newest time in the log with a
  grace), `completed_without_detection`, `incident_without_notification`,
  `receipt_incomplete`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.chain import SeenHashes, event_digest
from streams.decider import next_deadline
from streams.evidence import EvidenceError, RecoveryCompleted, read
from streams.evolve import advance_chain, evolve
from streams.grouping import is_outage_key
from streams.models import GENESIS_HASH, AuditEvent, EventType
from streams.state import Phase, Record
from streams.timefmt import iso_from_ms

INFORMATIONAL = frozenset({"benign_duplicate"})
# the types `Verifier._compliance` looks at
_COMPLIANCE_TYPES = frozenset(
    {
        EventType.RECOVERY_COMPLETED,
        EventType.INCIDENT_OPENED,
        EventType.NOTIFICATION_SENT,
        EventType.NOTIFICATION_SUPPRESSED,
    }
)
DEFAULT_GRACE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    connector_id: str
    sequence: int | None
    position: str | None  # where the event was read: "partition/offset" or archive index
    detail: str

    @property
    def benign(self) -> bool:
        return self.kind in INFORMATIONAL

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "connector_id": self.connector_id,
            "sequence": self.sequence,
            "position": self.position,
            "detail": self.detail,
        }


@dataclass(slots=True)
class _Chain:
    record: Record
    hashes: SeenHashes = field(default_factory=SeenHashes)
    # incident id -> (opened at, sequence, position) for incidents still lacking a
    # notification outcome; None while there are none (most chains, most of the time)
    unnotified: dict[str, tuple[int, int, str | None]] | None = None


class Verifier:
    """Feed events in log order with `check`; `finish` returns every finding."""

    def record_of(self, connector_id: str) -> Record:
        """The connector's state of record after the events checked so far."""
        return self.chains[connector_id].record

    def records(self) -> dict[str, Record]:
        """Every connector's state of record after the events checked so far (outages are
        chains too, not connectors: streams/projections.py folds them)."""
        return {
            connector_id: chain.record
            for connector_id, chain in self.chains.items()
            if not is_outage_key(connector_id)
        }

    def __init__(self, grace_ms: int = DEFAULT_GRACE_MS) -> None:
        self.grace_ms = grace_ms
        self.chains: dict[str, _Chain] = {}
        self.findings: list[Finding] = []
        self.newest_at = 0
        self.count = 0

    def _find(self, kind: str, event: AuditEvent, position: str | None, detail: str) -> None:
        self.findings.append(Finding(kind, event.connector_id, event.sequence, position, detail))

    def check(self, event: AuditEvent, position: str | None = None) -> bool:
        """Check one event; True when it is new evidence (not a duplicate) and was folded."""
        self.count += 1
        connector_id, sequence = event.connector_id, event.sequence
        chain = self.chains.get(connector_id)
        if chain is None:
            chain = self.chains[connector_id] = _Chain(Record(connector_id))
        if event.event_id != f"{connector_id}:{sequence}":
            self._find("bad_event_id", event, position, f"event_id {event.event_id!r}")
        digest = event_digest(event)
        recomputed = digest.hex()
        intact = recomputed == event.hash
        if not intact:
            self._find(
                "hash_mismatch",
                event,
                position,
                f"content does not match its hash (recomputed {recomputed[:12]}…)",
            )
        record = chain.record
        # every hash kept is of a sequence the record has reached: a later one is new
        seen = chain.hashes.get(sequence) if sequence <= record.sequence else None
        if seen is not None:
            if seen == event.hash and intact:
                self._find("benign_duplicate", event, position, "identical re-send")
            else:
                self._find(
                    "conflicting_duplicate",
                    event,
                    position,
                    "same sequence as an earlier event, different content",
                )
            return False
        expected = record.sequence + 1
        if sequence > expected:
            self._find(
                "sequence_gap",
                event,
                position,
                f"sequences {expected}..{sequence - 1} missing before this event",
            )
        elif sequence < expected:
            self._find(
                "out_of_order",
                event,
                position,
                f"sequence {sequence} arrived after {record.sequence}",
            )
            chain.hashes.add(sequence, event.hash, digest if intact else None)
            return False
        elif event.prev_hash != (record.head_hash if record.sequence else GENESIS_HASH):
            self._find(
                "chain_break",
                event,
                position,
                "prev_hash is not the hash of the previous event",
            )
        if event.type in _COMPLIANCE_TYPES:
            self._compliance(chain, event, position)
        chain.hashes.add(sequence, event.hash, digest if intact else None)
        self.newest_at = max(self.newest_at, event.occurred_at)
        try:
            chain.record = evolve(record, event)
        except EvidenceError as error:
            self._find("malformed_evidence", event, position, f"{event.type.value} {error}")
            chain.record = advance_chain(record, event)
            return False
        return True

    def _compliance(self, chain: _Chain, event: AuditEvent, position: str | None) -> None:
        kind = event.type
        if kind is EventType.RECOVERY_COMPLETED:
            if chain.record.phase is not Phase.FAILED:
                self._find(
                    "completed_without_detection",
                    event,
                    position,
                    "recovery completed with no open failure episode",
                )
            try:
                read(RecoveryCompleted, event.attributes)
            except EvidenceError as error:
                self._find("receipt_incomplete", event, position, f"receipt {error}")
        elif kind is EventType.INCIDENT_OPENED and event.incident_id is not None:
            if chain.unnotified is None:
                chain.unnotified = {}
            chain.unnotified[event.incident_id] = (event.occurred_at, event.sequence, position)
        elif kind is not EventType.INCIDENT_OPENED and chain.unnotified is not None:
            chain.unnotified.pop(event.incident_id or "", None)
            if not chain.unnotified:
                chain.unnotified = None

    def finish(self) -> list[Finding]:
        """All findings, including those judged at the end of the log."""
        cutoff = self.newest_at - self.grace_ms
        findings = list(self.findings)
        for connector_id, chain in self.chains.items():
            due = next_deadline(chain.record, None)
            if due is not None and due[0] < cutoff:
                findings.append(
                    Finding(
                        "deadline_missed",
                        connector_id,
                        chain.record.sequence,
                        None,
                        f"{due[1]} deadline {iso_from_ms(due[0])} passed with no follow-up "
                        f"(log ends {iso_from_ms(self.newest_at)})",
                    )
                )
            for incident_id, (opened_at, sequence, position) in (chain.unnotified or {}).items():
                if opened_at < cutoff:
                    findings.append(
                        Finding(
                            "incident_without_notification",
                            connector_id,
                            sequence,
                            position,
                            f"incident {incident_id} has no notification.sent",
                        )
                    )
        return findings


def verify_events(events: list[AuditEvent], grace_ms: int = DEFAULT_GRACE_MS) -> list[Finding]:
    verifier = Verifier(grace_ms)
    for index, event in enumerate(events):
        verifier.check(event, str(index))
    return verifier.finish()
