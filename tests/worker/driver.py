"""The core's test driver (agents/testing/driver.py) through the worker's InputProcessor over a
dict store: every input is a one-item batch whose new state goes through the store's bytes,
so the rules' tests check the processor, the state codec and the liveness it keeps aside."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.testing.driver import Driver
from agents.wire.records import Unpacked
from agents.worker.processor import DictStore, Input, InputProcessor
from agents.worker.statecodec import load_state
from streams.models import AuditEvent, DeciderInput
from streams.state import ConnectorState


@dataclass
class ProcessorDriver(Driver):
    store: DictStore = field(default_factory=DictStore)
    processor: InputProcessor = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.processor = InputProcessor(self.policy, self.store, partitions=1)

    def feed(self, message: DeciderInput) -> list[AuditEvent]:
        self.inputs.append(message)
        position = len(self.inputs)
        late_before = self.processor.counters["late_pings"]
        item = Unpacked(message, position, f"in/{position}", None, None)
        outputs = self.processor.process([Input(item, 0)])
        self.processor.write(outputs)
        events = [event for _key, event, _partition in outputs.events]
        self.events.extend(events)
        self.commands.extend(command for _key, command in outputs.commands)
        self.late += self.processor.counters["late_pings"] - late_before
        self.state = self.stored_state()
        return events

    def stored_state(self) -> ConnectorState:
        """The state as the worker would read it next: the table's bytes plus liveness."""
        stored = self.store.data.get(self.connector_id.encode())
        state = ConnectorState.new(self.connector_id) if stored is None else load_state(stored)[0]
        last_checked_at, heartbeat_deadline = self.processor.liveness_of(self.connector_id)
        return state._replace(
            last_checked_at=last_checked_at, heartbeat_deadline=heartbeat_deadline
        )
