"""P1p: the same workload as `bench throughput` through a quixstreams application, the
Python peer a user would pick instead of Faust — beside our worker and the raw ceiling
loop, all three on the same pings in the same run, alternating.

The peer runs the same core on the same input as our decider: decode the ping (the
router's `decode_input`), `decide` against the connector's state in quixstreams' state
store (RocksDB, with its changelog topic), write the state back only when the stored part
changed (liveness in memory, as our worker keeps it), and produce every audit event and
command to an output topic. Its outputs are checked against a reference fold of `decide`
over the same pings: it must do exactly the work the workload asks, no more, no less.
Measured from its first message to the end of `run()` (outputs flushed, offsets and
changelog committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import shutil
import statistics
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.policyfile import load_policy
from agents.wire.codec import registry
from agents.wire.records import audit_record, decode_connector_input
from agents.worker.statecodec import dump_state, load_state
from bench.env import BenchConfigError
from bench.replay import bootstrap
from bench.throughput import baseline, pings, produce, system
from bench.worker import audited, fresh
from streams.decider import decide
from streams.models import AuditEvent, Command, RecoveryRequest
from streams.policy import Policy
from streams.state import ConnectorState

if TYPE_CHECKING:
    from quixstreams import State

STATE_KEY = "state"


def reference_outputs(records: list[tuple[bytes, bytes]], policy: Policy) -> int:
    """Audit events + commands of a fold of `decide` over the pings, connector by connector
    in the order they were sent (what any correct processor must produce, ticks aside)."""
    reg = registry()
    states: dict[str, ConnectorState] = {}
    outputs = 0
    for _key, value in records:
        ping = decode_connector_input(reg, value)
        state = states.get(ping.connector_id) or ConnectorState.new(ping.connector_id)
        decision = decide(state, ping, policy)
        states[ping.connector_id] = decision.state
        outputs += len(decision.events) + len(decision.commands)
    return outputs


def _require_quixstreams() -> None:
    """Before any work: quixstreams is a dev dependency (`pip install -e '.[dev]'`)."""
    with warnings.catch_warnings():
        # authlib (which quixstreams imports) warns about its own httpx module on import, and
        # sets its warnings to "always" when first imported: so after that, they are ignored.
        with contextlib.suppress(ImportError):
            importlib.import_module("authlib.deprecate")
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            importlib.import_module("quixstreams")
        except ImportError:
            raise BenchConfigError(
                "bench peer needs quixstreams, a dev dependency: pip install -e '.[dev]'"
            ) from None


class QuixPeer:
    """The decider as a quixstreams StreamingDataFrame."""

    def __init__(self, bootstrap: str, health_topic: str, state_dir: Path, expected: int):
        # Imported here: quixstreams is a dev dependency that only this benchmark uses.
        from quixstreams import Application, message_context  # noqa: PLC0415 - a dev dependency of this benchmark alone

        self.message_context = message_context
        self.registry = registry()
        self.policy = load_policy(None)
        self.audit_codec = self.registry.codec("AuditEvent")
        self.request_codec = self.registry.codec("RecoveryRequest")
        self.notification_codec = self.registry.codec("NotificationRequest")
        self.liveness: dict[str, tuple[int | None, int | None]] = {}
        self.expected = expected
        self.seen = 0
        self.outputs = 0
        self.started: float | None = None
        self.app = Application(
            broker_address=bootstrap,
            consumer_group=f"{health_topic}.quix-peer",
            auto_offset_reset="earliest",
            state_dir=str(state_dir),
            loglevel="WARNING",
        )
        source = self.app.topic(health_topic, value_deserializer="bytes")
        out = self.app.topic(
            f"{health_topic}.quix-peer-out", value_serializer="bytes", key_serializer="bytes"
        )
        frame = self.app.dataframe(source)
        frame = frame.apply(self.decide, stateful=True, expand=True)
        frame.to_topic(out)

    def decide(self, value: bytes, state: State[str, str]) -> list[bytes]:
        if self.started is None:
            self.started = time.perf_counter()
        ping = decode_connector_input(self.registry, value)
        connector_id = ping.connector_id
        stored = state.get(STATE_KEY)
        if stored is None:
            before = ConnectorState.new(connector_id)
        else:
            before, _ = load_state(stored.encode())
        live = self.liveness.get(connector_id)
        if live is not None:
            before = before._replace(last_checked_at=live[0], heartbeat_deadline=live[1])
        context = self.message_context()
        source = f"{context.topic}/{context.partition}/{context.offset}"
        decision = decide(before, ping, self.policy, source)
        after = decision.state
        self.liveness[connector_id] = (after.last_checked_at, after.heartbeat_deadline)
        if after.record != before.record or after.memory != before.memory:
            state.set(STATE_KEY, dump_state(after, context.offset).decode())
        encoded = [self._event(event) for event in decision.events]
        encoded += [self._command(command) for command in decision.commands]
        self.outputs += len(encoded)
        self.seen += 1
        if self.seen == self.expected:
            self.app.stop()
        return encoded

    def _event(self, event: AuditEvent) -> bytes:
        return self.audit_codec.encode(audit_record(event))

    def _command(self, command: Command) -> bytes:
        codec = (
            self.request_codec if isinstance(command, RecoveryRequest) else self.notification_codec
        )
        return codec.encode(command.model_dump(mode="json"))

    def run(self) -> float:
        """Seconds from the first message to a committed, flushed stop."""
        self.app.run()
        if self.started is None:
            raise RuntimeError("the quixstreams peer processed nothing")
        return time.perf_counter() - self.started


def main(repeats: int) -> dict[str, Any]:
    _require_quixstreams()
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    records, failing = pings()
    expected_outputs = reference_outputs(records, load_policy(None))
    server = bootstrap()
    rates: dict[str, list[float]] = defaultdict(list)
    peer_outputs: list[int] = []
    for _ in range(max(1, repeats)):
        ns, settings = fresh(server)
        asyncio.run(produce(settings, records))
        rates["ceiling"].append(len(records) / asyncio.run(baseline(settings, len(records))))
        rates["worker"].append(len(records) / system(settings, ns))
        audited(ns, settings, failing)  # the worker did the workload's work, nothing spurious
        peer = QuixPeer(server, settings.topics.health, ns.tmp / "quix-state", len(records))
        rates["quixstreams"].append(len(records) / peer.run())
        peer_outputs.append(peer.outputs)
        shutil.rmtree(ns.tmp, ignore_errors=True)
    if any(n != expected_outputs for n in peer_outputs):
        raise RuntimeError(
            f"the peer produced {peer_outputs} outputs; the reference fold {expected_outputs}"
        )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    result: dict[str, Any] = {
        "pings": len(records),
        "outputs_expected": expected_outputs,
        "pings_per_s": {name: {"median": medians[name], "all": rates[name]} for name in rates},
        "worker_over_peer": medians["worker"] / medians["quixstreams"],
        "peer_over_ceiling": medians["quixstreams"] / medians["ceiling"],
        "worker_over_ceiling": medians["worker"] / medians["ceiling"],
        "goal": "worker >= quixstreams",
    }
    print(f"P1p peer: {len(records):,} pings, {len(rates['worker'])} run(s), alternating")
    for name in ("worker", "quixstreams", "ceiling"):
        runs = ", ".join(f"{r:,.0f}" for r in rates[name])
        print(f"  {name:<11}: {medians[name]:>9,.0f} pings/s ({runs})")
    print(
        f"  worker / quixstreams: {result['worker_over_peer']:.2f}; quixstreams / ceiling:"
        f" {result['peer_over_ceiling']:.3f}; worker / ceiling: {result['worker_over_ceiling']:.3f}"
    )
    return result
