"""The retry/escalation policy: a validated, immutable value.

Parsing YAML text is pure; reading the file is the shell's job. Unknown keys and wrong
types are rejected with the key's path, at start-up.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from fnmatch import fnmatchcase
from functools import cached_property
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class PolicyError(ValueError):
    """The policy is invalid; the message names each offending key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Backoff(_Strict):
    base_s: Seconds = 1.0
    cap_s: Seconds = 60.0


class CommandTopicAction(_Strict):
    type: Literal["command_topic"] = "command_topic"


class WebhookAction(_Strict):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    timeout_s: Seconds = 5.0
    secret_env: str | None = None


class KafkaConnectAction(_Strict):
    type: Literal["kafka_connect"]
    url: str = Field(pattern=r"^https?://")
    # The Connect connector's name; by default the connector id, so one `defaults:` entry
    # covers every connector of a cluster watched by `probe kafka-connect`.
    connector: str | None = Field(default=None, min_length=1)
    timeout_s: Seconds = 5.0

    def connector_name(self, connector_id: str) -> str:
        return self.connector or connector_id


RecoveryAction = Annotated[
    CommandTopicAction | WebhookAction | KafkaConnectAction, Field(discriminator="type")
]


class ConnectorPolicy(_Strict):
    """The effective policy for one connector (defaults merged with its overrides)."""

    failure_threshold: int = Field(default=1, ge=1)
    heartbeat_timeout_s: Seconds = 60.0
    max_retries: int = Field(default=3, ge=0)
    attempt_timeout_s: Seconds = 30.0
    backoff: Backoff = Backoff()
    flap_window: int = Field(default=21, ge=3, le=200)
    flap_high: float = Field(default=0.20, gt=0, le=1)
    flap_low: float = Field(default=0.05, ge=0, lt=1)
    recovery_action: RecoveryAction = CommandTopicAction()

    @model_validator(mode="after")
    def _hysteresis(self) -> ConnectorPolicy:
        if self.flap_low >= self.flap_high:
            raise ValueError("flap_low must be below flap_high")
        return self

    @cached_property
    def heartbeat_timeout_ms(self) -> int:
        return round(self.heartbeat_timeout_s * 1000)

    @cached_property
    def attempt_timeout_ms(self) -> int:
        return round(self.attempt_timeout_s * 1000)

    @cached_property
    def steady_healthy_bits(self) -> int:
        """The flap window of a connector whose last `flap_window` checks were healthy."""
        return (1 << self.flap_window) - 1

    @cached_property
    def sha256(self) -> str:
        """Hash of the canonical JSON of this effective policy (recorded at detection)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class NotifyTarget(_Strict):
    """Where a notification goes. No webhook: the `connector.notifications` topic."""

    type: Literal["webhook"] = "webhook"
    webhook: str | None = Field(default=None, pattern=r"^https?://")
    secret_env: str | None = None


class AlertmanagerTarget(_Strict):
    """A Prometheus Alertmanager: each open incident is an alert posted to its API v2,
    re-posted every `resend_s` while open (docs/alertmanager.md). `url` is its base URL."""

    type: Literal["alertmanager"]
    url: str = Field(pattern=r"^https?://")
    resend_s: Seconds = 60.0
    severity: str = Field(default="critical", min_length=1)
    runbook_url: str | None = Field(default=None, pattern=r"^https?://")
    # Where people reach the admin page (e.g. behind a proxy); alerts link a connector's
    # timeline under it. Without it: the worker's own web port.
    dashboard_url: str | None = Field(default=None, pattern=r"^https?://")
    timeout_s: Seconds = 5.0

    @property
    def alerts_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/api/v2/alerts") else base + "/api/v2/alerts"


def _target_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "webhook"))
    return str(getattr(value, "type", "webhook"))


# A webhook (the default, no `type` needed) or an Alertmanager, wherever a target is named.
Target = Annotated[
    Annotated[NotifyTarget, Tag("webhook")] | Annotated[AlertmanagerTarget, Tag("alertmanager")],
    Discriminator(
        _target_type,
        custom_error_type="target_type",
        custom_error_message="type: use webhook (the default) or alertmanager",
    ),
]


class EscalationStep(_Strict):
    after_s: Seconds
    target: Target


class DashboardUser(_Strict):
    """One user of the admin page. `tenant` confines them to one tenant (its key, e.g.
    `acme`, or `_platform`); without it they see every tenant. Acting still needs the name
    in the policy's `admins`."""

    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    tenant: str | None = Field(default=None, min_length=1)


class Dashboard(_Strict):
    """Who may open the admin page: users signing in with a token (only its SHA-256 is
    kept here) or named by a trusted reverse proxy in `trusted_header`."""

    users: dict[str, DashboardUser] = Field(default_factory=dict)
    trusted_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+$")


class Dependency(_Strict):
    """Something connectors share (an ERP, a CRM, a network path): connectors whose ids
    match one of `connectors` (globs: `*`, `?`, `[...]`, case-sensitive) fail together when
    it is down, and are grouped into one outage (docs/outages.md)."""

    connectors: tuple[Annotated[str, Field(min_length=1)], ...] = Field(min_length=1)


class Outages(_Strict):
    """When failing connectors of one group become one outage (docs/outages.md)."""

    min_connectors: int = Field(default=5, ge=2)
    window_s: Seconds = 60.0
    release_per_s: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    # How long a grouped failure's own page waits for its outage (Alertmanager's
    # `group_wait`); 0: no wait.
    group_wait_s: float = Field(default=10.0, ge=0, allow_inf_nan=False)

    @cached_property
    def window_ms(self) -> int:
        return round(self.window_s * 1000)

    @cached_property
    def group_wait_ms(self) -> int:
        return round(self.group_wait_s * 1000)


_DEPENDENCY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _dependency_name(name: str) -> str:
    if not _DEPENDENCY_NAME.fullmatch(name):
        raise ValueError(
            f"dependency name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. sap-prod)"
        )
    return name


DependencyName = Annotated[str, AfterValidator(_dependency_name)]


class Policy(_Strict):
    defaults: ConnectorPolicy = ConnectorPolicy()
    connectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tenants: dict[str, Target] = Field(default_factory=dict)
    platform_admin: Target = NotifyTarget()
    escalation: tuple[EscalationStep, ...] = ()
    admins: tuple[str, ...] = ()
    dashboard: Dashboard = Dashboard()
    dependencies: dict[DependencyName, Dependency] = Field(default_factory=dict)
    outages: Outages = Outages()

    @cached_property
    def outages_take_over(self) -> bool:
        """Whether outages page and restart instead of their members (docs/outages.md):
        the policy says what connectors share or how outages form. Otherwise outages are
        recorded and linked, and every connector pages and restarts for itself, as before
        outages existed."""
        return bool(self.dependencies) or "outages" in self.model_fields_set

    def problems(self) -> list[str]:
        """Errors that need the whole document: per-connector overrides, step order."""
        errors: list[str] = []
        for connector_id, overrides in self.connectors.items():
            try:
                self._merge(overrides or {})
            except ValidationError as error:
                errors.extend(
                    _paths(error, prefix=("connectors", connector_id), model=ConnectorPolicy)
                )
        previous = 0.0
        for index, step in enumerate(self.escalation):
            if step.after_s <= previous:
                errors.append(f"escalation.{index}.after_s: must grow from step to step")
            previous = step.after_s
        for connector_id in self.connectors:
            shared = self._dependencies_matching(connector_id)
            if len(shared) > 1:
                errors.append(
                    f"dependencies: connector {connector_id!r} matches {' and '.join(shared)}: "
                    "narrow the globs so it matches one"
                )
        return errors

    def _dependencies_matching(self, connector_id: str) -> list[str]:
        return [
            name
            for name, dependency in self.dependencies.items()
            if any(fnmatchcase(connector_id, glob) for glob in dependency.connectors)
        ]

    def dependency_of(self, connector_id: str) -> str | None:
        """The first dependency (in the policy's order) whose globs match the connector."""
        if not self.dependencies:
            return None
        matching = self._dependencies_matching(connector_id)
        return matching[0] if matching else None

    def _merge(self, overrides: dict[str, Any]) -> ConnectorPolicy:
        merged = self.defaults.model_dump()
        for key, value in overrides.items():
            if key == "backoff" and isinstance(value, dict):
                merged["backoff"] = {**merged["backoff"], **value}
            else:
                merged[key] = value
        return ConnectorPolicy.model_validate(merged)

    @cached_property
    def _effective(self) -> dict[str, ConnectorPolicy]:
        return {cid: self._merge(o or {}) for cid, o in self.connectors.items()}

    def for_connector(self, connector_id: str) -> ConnectorPolicy:
        return self._effective.get(connector_id, self.defaults)

    @property
    def expected_connectors(self) -> tuple[str, ...]:
        return tuple(self.connectors)

    def may_act(self, actor: str) -> bool:
        return not self.admins or actor in self.admins

    def alertmanagers(self) -> list[tuple[str, AlertmanagerTarget]]:
        """(audience, target) for each Alertmanager the policy names: `platform_admin`,
        `tenant:<id>`, `escalation:<level>` (the notification targets' names)."""
        named: list[tuple[str, NotifyTarget | AlertmanagerTarget]] = [
            ("platform_admin", self.platform_admin),
            *((f"tenant:{tenant}", target) for tenant, target in self.tenants.items()),
            *(
                (f"escalation:{level}", step.target)
                for level, step in enumerate(self.escalation, start=1)
            ),
        ]
        return [(who, t) for who, t in named if isinstance(t, AlertmanagerTarget)]

    def escalation_after_ms(self, step_index: int) -> int | None:
        if step_index >= len(self.escalation):
            return None
        return round(self.escalation[step_index].after_s * 1000)


def _paths(
    error: ValidationError, prefix: tuple[str, ...] = (), model: type[BaseModel] | None = None
) -> list[str]:
    """Each error as `path: message`; an unknown key also gets the known key it most
    likely meant (`model` is the model validated, `Policy` by default)."""
    root = Policy if model is None else model
    lines = []
    for item in error.errors():
        line = ".".join(str(part) for part in (*prefix, *item["loc"])) + f": {item['msg']}"
        if item["type"] == "extra_forbidden":
            line += _did_you_mean(root, item["loc"])
        lines.append(line)
    return lines


# Beyond spelling: keys a user writes for what the policy calls otherwise.
_MEANT = {"token": "token_sha256", "password": "token_sha256", "tenant_id": "tenant"}


def _did_you_mean(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """` (did you mean K?)` for an unknown key at `loc`, when a key of the model that holds
    it is close; empty when none is (or the path leads through a free-form mapping)."""
    holder = _model_at(root, loc[:-1])
    if holder is None:
        return ""
    unknown = str(loc[-1])
    known = list(holder.model_fields)
    meant = _MEANT.get(unknown.lower())
    if meant not in known:
        close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
        meant = close[0] if close else None
    if meant is None:
        return ""
    if meant == "token_sha256":
        return ' (did you mean token_sha256? the token\'s SHA-256: printf %s "$TOKEN" | sha256sum)'
    return f" (did you mean {meant}?)"


def _model_at(model: type[BaseModel], path: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model a validation error's location ends in: through fields, dict values and
    tuple items; None where a plain mapping or a union (the recovery actions) is."""
    annotation: Any = model
    for part in path:
        while get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        origin = get_origin(annotation)
        if origin in (dict, tuple):
            annotation = get_args(annotation)[-1 if origin is dict else 0]
            continue
        if origin in (Union, UnionType):  # a tagged union: the error's path names the tag
            annotation = next(
                (m for m in map(_unannotated, get_args(annotation)) if _tagged(m, part)), None
            )
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        field = annotation.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _unannotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _tagged(member: Any, tag: int | str) -> bool:
    """Whether a union member is the one a validation error's path names by its tag."""
    return tag in get_args(_type_of(member))


def _type_of(member: Any) -> Any:
    """The `type` tag's annotation of a union member (a Literal), or None."""
    if isinstance(member, type) and issubclass(member, BaseModel) and "type" in member.model_fields:
        return member.model_fields["type"].annotation
    return None


def parse_policy(document: Any) -> Policy:
    """Validate a policy document (already parsed YAML/JSON) or raise PolicyError."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise PolicyError("policy: must be a mapping")
    try:
        policy = Policy.model_validate(document)
    except ValidationError as error:
        raise PolicyError("; ".join(_paths(error))) from None
    problems = policy.problems()
    if problems:
        raise PolicyError("; ".join(problems))
    return policy


def policy_from_yaml(text: str, source: str = "policy") -> Policy:
    """`source` names the text in errors (the file's path), with the line and column."""
    try:
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise PolicyError(f"{where}: not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"{source}: not valid YAML: {error}") from None
    return parse_policy(document)
