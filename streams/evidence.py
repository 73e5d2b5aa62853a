"""Typed views of the `attributes` map of audit events: the one definition of every key.

On the wire, `attributes` stays a string map (`schemas/audit_event.avsc`). In the code, each
event type has a view (a NamedTuple) whose field names are the keys and whose field types
say what the text holds; `write` turns a view into the map and `read` turns the map back
into a view. The decider writes views, `evolve`, `verify`, the projections and the report
read them, so a mistyped key or value is a mypy error rather than a silent `None`.

Text forms (unchanged from the first logs): instants as `iso_from_ms`, integers in decimal,
booleans as `true`/`false`, ratios with three decimals. A field typed `X | None` is left out
of the map when None; every other field is required. Keys a view does not know (another
view's, such as the provenance every event carries) are ignored by `read`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from enum import StrEnum
from functools import lru_cache
from operator import itemgetter, methodcaller
from types import UnionType
from typing import (
    Annotated,
    Any,
    Literal,
    NamedTuple,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
)
from typing import get_type_hints as _hints

from streams.models import (
    EscalationReason,
    EventType,
    NotificationKind,
    OpenReason,
    RecoveryMode,
)
from streams.timefmt import iso_from_ms, ms_from_iso


class EvidenceError(ValueError):
    """An event's attributes do not read as its type's view (a key missing, a value
    malformed); the message names the key."""


class _Text(NamedTuple):
    """How one kind of value is written as text and read back."""

    name: str  # what the value should have been, for the error
    write: Callable[[Any], str]
    read: Callable[[str], Any] | None  # raises ValueError or KeyError; None: the text as is


def _closed(name: str, values: Mapping[str, Any]) -> _Text:
    """A value out of a closed set: a dict lookup (cheaper than an enum call)."""
    return _Text(name, str, dict(values).__getitem__)


# A receipt holds the same instant twice (`timestamp`, `recovered_at`), and a replay reads
# each event in the verify fold and again in the projection: most parses repeat a recent one.
_INSTANT = _Text("an ISO-8601 instant", iso_from_ms, lru_cache(maxsize=1024)(ms_from_iso))
_RATIO = _Text("a ratio", "{:.3f}".format, float)


def _write_names(names: tuple[str, ...]) -> str:
    return json.dumps(list(names), ensure_ascii=False, separators=(",", ":"))


def _read_names(text: str) -> tuple[str, ...]:
    names = json.loads(text)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError("not a list of strings")
    return tuple(names)


_NAMES = _Text("a JSON list of strings", _write_names, _read_names)

Instant = Annotated[int, _INSTANT]
"""Epoch milliseconds, written as `2025-09-29T12:30:00.000Z`."""
Ratio = Annotated[float, _RATIO]
"""A ratio in [0, 1], written with three decimals."""
Names = Annotated[tuple[str, ...], _NAMES]
"""Connector ids or incident ids, written as a JSON list (an id may hold any character)."""

_PLAIN: dict[object, _Text] = {
    str: _Text("text", str, None),
    int: _Text("an integer", str, int),
    float: _Text("a number", str, float),
    bool: _Text(
        "true or false",
        lambda value: "true" if value else "false",
        {"true": True, "false": False}.__getitem__,
    ),
}


# -- the views --------------------------------------------------------------------------------


class Provenance(NamedTuple):
    """Which input caused the event (every event the worker writes carries it)."""

    source: str  # topic/partition/offset of the input
    source_index: int  # the event's place among those the input caused


class CommandAnswer(NamedTuple):
    """The admin command an event answers, on any event type that answers one."""

    command_id: str | None = None


class FailureDetected(NamedTuple):
    retryable: bool
    first_failing_at: Instant
    policy_sha256: str
    position: str | None = None
    next_attempt_at: Instant | None = None
    group: str | None = None  # the outage group it fails in (docs/outages.md); None: none
    # its page is held until then for an outage to link it (the group wait); None: sent
    notify_at: Instant | None = None


class FlappingStarted(NamedTuple):
    state_change: Ratio
    threshold: float


class FlappingStopped(NamedTuple):
    state_change: Ratio
    threshold: float
    next_attempt_at: Instant | None = None


class RecoveryStarted(NamedTuple):
    deadline: Instant
    action: str  # the policy's recovery action type
    command_id: str | None = None  # a manual attempt: the admin command that asked for it
    reason: str | None = None


class RecoveryActionAccepted(NamedTuple):
    request_id: str
    detail: str


class RecoveryFailed(NamedTuple):
    reason: str
    next_attempt_at: Instant | None = None


class RecoveryCompleted(NamedTuple):
    """The recovery receipt."""

    connector_id: str
    failure: str
    retries: int
    status: Literal["recovered"]
    timestamp: Instant
    detected_at: Instant
    recovered_at: Instant
    duration_ms: int
    mode: RecoveryMode
    actor: str
    trigger: Literal["attempt", "spontaneous"]
    position_at_failure: str | None = None
    position_at_recovery: str | None = None


class RetriesExhausted(NamedTuple):
    max_retries: int


class Silenced(NamedTuple):
    command_id: str
    until: Instant
    reason: str | None = None


class Retired(NamedTuple):
    command_id: str
    reason: str | None = None


class IncidentOpened(NamedTuple):
    reason: OpenReason
    level: int  # -1 when the opening notifies nobody (an escalation follows)
    next_escalation_level: int | None = None
    next_escalation_at: Instant | None = None


class IncidentAcknowledged(NamedTuple):
    command_id: str
    reason: str | None = None


class IncidentEscalated(NamedTuple):
    level: int
    target: str
    reason: EscalationReason
    next_escalation_level: int | None = None
    next_escalation_at: Instant | None = None


class IncidentResolved(NamedTuple):
    """Superseded by a new episode, recovered, or closed by an admin (manual, retired)."""

    resolution: Literal["superseded", "manual", "retired"] | None = None
    reason: str | None = None
    command_id: str | None = None
    recovery_event_id: str | None = None


class NotificationOutcome(NamedTuple):
    dedup_key: str
    target: str
    level: int
    detail: str | None = None


class NotificationSent(NotificationOutcome):
    __slots__ = ()


class NotificationFailed(NotificationOutcome):
    __slots__ = ()


class NotificationSuppressed(NamedTuple):
    notification_kind: NotificationKind
    targets: str  # comma-separated
    reason: Literal["silenced", "outage"]
    silenced_until: Instant | None = None  # reason silenced
    outage_id: str | None = None  # reason outage: the outage that pages instead


class NotificationReleased(NamedTuple):
    """A failure's page held for its outage's group wait goes out: no outage linked the
    episode within `group_wait_ms` of its detection."""

    notification_kind: NotificationKind
    targets: str  # comma-separated
    group_wait_ms: int


class CommandRejected(NamedTuple):
    command_id: str
    action: str
    rejection: str
    reason: str | None = None


class OutageOpened(NamedTuple):
    """At least `min_connectors` of the group failed within the window: the outage's id is
    this event's id. `connectors` and `incidents` (aligned) are its members so far;
    `tenants` the distinct tenants among them (each notified)."""

    group: str
    connectors: Names
    incidents: Names
    min_connectors: int
    window_ms: int
    tenants: Names | None = None


class OutageJoined(NamedTuple):
    group: str
    connector: str
    member_incident: str
    tenant: str | None = None


class OutageResolved(NamedTuple):
    """The last member still failing recovered or left; or an admin closed the outage by
    hand (`resolution` "manual", with the command): its members keep their own episodes."""

    group: str
    episodes: int  # member failure episodes that took part
    recovered: int
    left: int
    duration_ms: int
    resolution: Literal["manual"] | None = None  # None: its last member's episode ended
    command_id: str | None = None
    reason: str | None = None
    still_failing: int | None = None  # members whose episodes go on (a manual resolve)


class OutageAcknowledged(NamedTuple):
    """An admin took the outage on (`actor` on the event)."""

    command_id: str
    reason: str | None = None


class OutageRecoveryRequested(NamedTuple):
    """An admin asked for a manual recovery of every member still failing: each gets a
    `recover` command of its own (`command_id` of the outage's, `:` and the connector id),
    recorded on its own chain as a connector's `recover` is."""

    command_id: str
    connectors: Names
    incidents: Names
    reason: str | None = None


class OutageLinked(NamedTuple):
    """On a member's chain: its failure episode is in the outage `outage_id` (the event
    id of that outage's `outage.opened`); its pages go through the outage from now on,
    and, when `held`, its automatic restarts wait for the outage to release them."""

    outage_id: str
    group: str
    held: bool | None = None  # None: restarts as usual (the probe)


class OutageReleased(NamedTuple):
    """On a held member's chain: its outage released its restarts (the dependency
    answered); the next automatic attempt is at `next_attempt_at` (None: its retries are
    used up, or an attempt is in flight)."""

    outage_id: str
    next_attempt_at: Instant | None = None


Evidence = (
    FailureDetected
    | FlappingStarted
    | FlappingStopped
    | RecoveryStarted
    | RecoveryActionAccepted
    | RecoveryFailed
    | RecoveryCompleted
    | RetriesExhausted
    | Silenced
    | Retired
    | IncidentOpened
    | IncidentAcknowledged
    | IncidentEscalated
    | IncidentResolved
    | NotificationSent
    | NotificationFailed
    | NotificationSuppressed
    | CommandRejected
    | OutageOpened
    | OutageJoined
    | OutageResolved
    | OutageLinked
    | NotificationReleased
    | OutageReleased
    | OutageAcknowledged
    | OutageRecoveryRequested
)

EVENT_TYPE: dict[type[Evidence], EventType] = {
    FailureDetected: EventType.FAILURE_DETECTED,
    FlappingStarted: EventType.FLAPPING_STARTED,
    FlappingStopped: EventType.FLAPPING_STOPPED,
    RecoveryStarted: EventType.RECOVERY_STARTED,
    RecoveryActionAccepted: EventType.RECOVERY_ACTION_ACCEPTED,
    RecoveryFailed: EventType.RECOVERY_FAILED,
    RecoveryCompleted: EventType.RECOVERY_COMPLETED,
    RetriesExhausted: EventType.RETRIES_EXHAUSTED,
    Silenced: EventType.SILENCED,
    Retired: EventType.RETIRED,
    IncidentOpened: EventType.INCIDENT_OPENED,
    IncidentAcknowledged: EventType.INCIDENT_ACKNOWLEDGED,
    IncidentEscalated: EventType.INCIDENT_ESCALATED,
    IncidentResolved: EventType.INCIDENT_RESOLVED,
    NotificationSent: EventType.NOTIFICATION_SENT,
    NotificationFailed: EventType.NOTIFICATION_FAILED,
    NotificationSuppressed: EventType.NOTIFICATION_SUPPRESSED,
    CommandRejected: EventType.COMMAND_REJECTED,
    OutageOpened: EventType.OUTAGE_OPENED,
    OutageJoined: EventType.OUTAGE_JOINED,
    OutageResolved: EventType.OUTAGE_RESOLVED,
    OutageLinked: EventType.OUTAGE_LINKED,
    NotificationReleased: EventType.NOTIFICATION_RELEASED,
    OutageReleased: EventType.OUTAGE_RELEASED,
    OutageAcknowledged: EventType.OUTAGE_ACKNOWLEDGED,
    OutageRecoveryRequested: EventType.OUTAGE_RECOVERY_REQUESTED,
}
"""The event type each view is written as (one view per type; a test checks both ways)."""

RECEIPT_KEYS = tuple(name for name in RecoveryCompleted._fields if name != "trigger")
"""The receipt's keys an auditor is shown (`trigger` is the core's own bookkeeping)."""


# -- writing and reading ----------------------------------------------------------------------


View = TypeVar("View", bound=tuple[Any, ...])


class _Field(NamedTuple):
    key: str
    text: _Text
    required: bool


def _text_of(annotation: Any) -> tuple[_Text, bool]:
    """The text form of a field's type, and whether the field is required."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return get_args(annotation)[1], True
    if origin in (Union, UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        (member,) = members
        return _text_of(member)[0], False
    if origin is Literal:
        allowed = sorted(get_args(annotation))
        return _closed(f"one of {', '.join(allowed)}", {v: v for v in allowed}), True
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return _closed(f"one of {', '.join(annotation)}", {m.value: m for m in annotation}), True
    return _PLAIN[annotation], True


_FIELDS: dict[type[tuple[Any, ...]], tuple[_Field, ...]] = {}


def _fields(view_type: type[tuple[Any, ...]]) -> tuple[_Field, ...]:
    fields = _FIELDS.get(view_type)
    if fields is None:
        hints = _hints(view_type, include_extras=True)
        keys: tuple[str, ...] = view_type._fields  # type: ignore[attr-defined]  # views are NamedTuples
        fields = tuple(_Field(key, *_text_of(hints[key])) for key in keys)
        _FIELDS[view_type] = fields
    return fields


def write(view: Evidence | Provenance) -> dict[str, str]:
    """The attributes map of `view`: one key per field that is not None."""
    return {
        field.key: field.text.write(value)
        for field, value in zip(_fields(type(view)), view, strict=True)
        if value is not None
    }


_Getter = Callable[[Mapping[str, str]], Any]


def _getter(field: _Field) -> _Getter:
    """One field's value out of the map; KeyError or ValueError when it cannot be had."""
    key, parse = field.key, field.text.read
    if parse is None:
        return itemgetter(key) if field.required else methodcaller("get", key)
    if field.required:
        return lambda attributes: parse(attributes[key])
    return lambda attributes: None if (text := attributes.get(key)) is None else parse(text)


# Every replayed event is read (in the verify fold, the projections, `evolve`), so each view
# gets its getters once rather than interpreting its field types on every read.
_GETTERS: dict[type[tuple[Any, ...]], tuple[_Getter, ...]] = {}
# A replayed event is read by the verify fold, then by the projection (each through
# `evolve`): the same map, read again at once. Events are immutable, so the view is too.
_last_read: tuple[object, object, object] = (None, None, None)


def read(view_type: type[View], attributes: Mapping[str, str]) -> View:
    """The view of `attributes`; EvidenceError names a required key that is missing or a
    value that does not read as its field's type."""
    global _last_read  # noqa: PLW0603 - a memo of one, rebound whole (atomic under threads)
    last = _last_read
    if last[0] is attributes and last[1] is view_type:
        return cast(View, last[2])  # stored below for this view_type
    getters = _GETTERS.get(view_type)
    if getters is None:
        getters = _GETTERS[view_type] = tuple(_getter(f) for f in _fields(view_type))
    try:
        view = tuple.__new__(view_type, [get(attributes) for get in getters])
    except (KeyError, ValueError):
        raise _unreadable(view_type, attributes) from None
    _last_read = (attributes, view_type, view)
    return view


def _unreadable(view_type: type[tuple[Any, ...]], attributes: Mapping[str, str]) -> EvidenceError:
    """What is wrong with a map that does not read as `view_type`."""
    fields = _fields(view_type)
    absent = [f.key for f in fields if f.required and f.key not in attributes]
    if absent:
        return EvidenceError(f"lacks {', '.join(absent)}")
    for key, form, _ in fields:
        text = attributes.get(key)
        if form.read is not None and text is not None:
            try:
                form.read(text)
            except (KeyError, ValueError):
                return EvidenceError(f"{key} {text!r} is not {form.name}")
    return EvidenceError("does not read")  # unreachable: a getter failed for a reason above
