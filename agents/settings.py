"""Runtime settings of the shell, from the environment (`CR_*`, `KAFKA_BOOTSTRAP_SERVERS`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from agents.wire.cloudevents import default_source

STATE_TABLE = "connector-state"  # the worker's Faust table of per-connector state


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


class SettingsError(ValueError):
    """A setting of the environment that cannot be used; the message names it."""


def _env_int(name: str, default: int) -> int:
    text = _env(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, not {text!r}") from None


def _env_float(name: str, default: float, within: tuple[float, float] | None = None) -> float:
    text = _env(name, str(default))
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {text!r}") from None
    if within is not None and not within[0] <= value <= within[1]:
        low, high = within
        raise SettingsError(f"{name} must be between {low:g} and {high:g} seconds, not {text}")
    return value


# A broker refuses a group member's session timeout outside group.min/max.session.timeout.ms
# (6 s and 30 min by default): the worker would only learn it at its first join.
SESSION_TIMEOUT_RANGE_S = (6.0, 1800.0)


def state_home() -> Path:
    """The per-user state directory of the project (XDG Base Directory): worker data, the
    demo's files and, outside a source checkout, the local broker. Never the current
    directory, so every command works from any folder."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "connector-recovery"


@dataclass(frozen=True)
class Topics:
    health: str = "connector.health"
    audit: str = "connector.audit"
    dlq: str = "connector.health.dlq"
    admin: str = "connector.admin.commands"
    recovery_requests: str = "connector.recovery.requests"
    recovery_results: str = "connector.recovery.results"
    notifications: str = "connector.notifications"
    checkpoints: str = "connector.audit.checkpoints"

    def with_prefix(self, prefix: str) -> Topics:
        """Fresh topic names (tests use one prefix per test so they never share data)."""
        if not prefix:
            return self
        return Topics(**{name: f"{prefix}{value}" for name, value in vars(self).items()})


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate to Kafka. `password` never appears in a repr or a log."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None  # trust anchors for TLS; None = the system's

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @staticmethod
    def from_env() -> KafkaSecurity:
        protocol = _env("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not a Kafka protocol")
        password = os.environ.get("KAFKA_SASL_PASSWORD")
        password_file = os.environ.get("KAFKA_SASL_PASSWORD_FILE")
        if password_file:
            password = Path(password_file).read_text().strip()
        ca_file = os.environ.get("KAFKA_SSL_CAFILE")
        security = KafkaSecurity(
            protocol=protocol,
            sasl_mechanism=_env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            username=os.environ.get("KAFKA_SASL_USERNAME"),
            password=password,
            ca_file=Path(ca_file) if ca_file else None,
        )
        if security.sasl and not (security.username and security.password):
            raise ValueError(
                f"{protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
                " (or KAFKA_SASL_PASSWORD_FILE)"
            )
        return security


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "connector-recovery"
    topics: Topics = field(default_factory=Topics)
    partitions: int = 4
    # None: `state_home() / app_id`, created with its parents when the worker starts.
    data_dir: Path | None = None
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    store: str = "rocksdb://"
    policy_path: Path | None = None
    session_timeout_s: float = 30.0
    tick_interval_s: float = 1.0
    checkpoint_interval_s: float = 60.0
    # parsed connector states a worker keeps (~1 KB each; agents/worker/processor.py): a
    # fleet larger than this reads each ping's state from the table (~20 us more a ping)
    states_cached: int = 10_000
    # new states a batch of inputs decides before it sends their events and writes them
    # (agents/worker/app.py, `decide_batch`): a start's heartbeat graces decide one per
    # connector, and 322,000 held at once were ~300 MB and the collector's passes over them
    states_unsent: int = 5_000
    # audit events to fold at start from which the live views fold them in a process of
    # their own (agents/audit/child_fold.py); 0: never
    views_fold_in_child_from: int = 200_000
    # audit events ahead of the state table at an assignment from which crash repair reads
    # them in a process of its own (agents/worker/repair_process.py); 0: never
    repair_in_child_from: int = 200_000
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    cloudevents_source: str | None = None  # None: derived from app_id (`event_source`)
    # The id of the Kafka cluster the worker runs on (`agents.broker.topics.cluster_id`),
    # once it has asked; None before.
    kafka_cluster_id: str | None = None

    @property
    def event_source(self) -> str:
        """`ce_source` of every record this deployment writes (a URI naming it)."""
        return self.cloudevents_source or default_source(self.app_id)

    @property
    def worker_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else state_home() / self.app_id

    @property
    def worker_state_dir(self) -> Path:
        """Where the worker keeps its tables: a folder of the data dir per app id and Kafka
        cluster, so the same worker pointed at another cluster never reads what it left
        for the first (the tables are a cache of their changelogs on one cluster)."""
        cluster = self.kafka_cluster_id or "unknown-cluster"
        return self.worker_data_dir / f"{self.app_id}@{cluster}"

    @property
    def state_changelog_topic(self) -> str:
        """The state table's changelog, named as Faust names it."""
        return f"{self.app_id}-{STATE_TABLE}-changelog"

    @property
    def request_timeout_s(self) -> float:
        """The group clients' request timeout: Faust's default (90 s), or above a longer
        session timeout (a join waits up to a session for the other members)."""
        return max(90.0, self.session_timeout_s + 30.0)

    @property
    def router_group(self) -> str:
        """The consumer group of the router (agents/worker/router.py); the decider's is the
        app id."""
        return f"{self.app_id}-router"

    @property
    def inputs_topic(self) -> str:
        """The internal topic every decider input is repartitioned onto, by connector."""
        return f"{self.app_id}-inputs"

    @staticmethod
    def from_env() -> Settings:
        prefix = _env("CR_TOPIC_PREFIX", "")
        port = _env("KAFKA_PORT", "9092")
        policy = os.environ.get("CR_POLICY")
        return Settings(
            bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}"),
            app_id=_env("CR_APP_ID", "connector-recovery"),
            topics=Topics().with_prefix(prefix),
            partitions=_env_int("CR_PARTITIONS", 4),
            data_dir=Path(os.environ["CR_DATA_DIR"]) if os.environ.get("CR_DATA_DIR") else None,
            web_port=_env_int("CR_WEB_PORT", 6066),
            store=_env("CR_STORE", "rocksdb://"),
            policy_path=Path(policy) if policy else None,
            session_timeout_s=_env_float("CR_SESSION_TIMEOUT_S", 30, SESSION_TIMEOUT_RANGE_S),
            tick_interval_s=_env_float("CR_TICK_INTERVAL_S", 1.0),
            checkpoint_interval_s=_env_float("CR_CHECKPOINT_INTERVAL_S", 60),
            states_cached=_env_int("CR_STATES_CACHED", 10000),
            states_unsent=_env_int("CR_STATES_UNSENT", 5_000),
            views_fold_in_child_from=_env_int("CR_VIEWS_FOLD_IN_CHILD_FROM", 200_000),
            repair_in_child_from=_env_int("CR_REPAIR_IN_CHILD_FROM", 200_000),
            security=KafkaSecurity.from_env(),
            cloudevents_source=os.environ.get("CR_CLOUDEVENTS_SOURCE") or None,
        )

    def but(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]  # dataclass replace is untyped
