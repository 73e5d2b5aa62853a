"""States crash repair folded in a process of its own wait on disk (repairfile.py) until the
worker writes them: read a chunk at a time in the order written, readable one by one before
that, written to the store as they were stored, and gone with their partition."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.testing.driver import T0
from agents.wire.records import Unpacked
from agents.worker.processor import DictStore, Input, InputProcessor
from agents.worker.repairfile import RepairFile, write_states
from agents.worker.statecodec import dump_state, load_state
from streams.models import HealthPing, HealthStatus
from streams.policy import parse_policy
from streams.state import ConnectorState


def repaired(connector_id: str, sequence: int) -> ConnectorState:
    state = ConnectorState.new(connector_id)
    return state._replace(record=state.record._replace(sequence=sequence, head_hash="ab" * 32))


def states_file(tmp_path: Path, count: int) -> tuple[Path, list[tuple[bytes, bytes]]]:
    states = [(f"C-{i}".encode(), dump_state(repaired(f"C-{i}", i + 1))) for i in range(count)]
    path = tmp_path / "0.states"
    assert write_states(path, states) == count
    return path, states


def test_a_file_is_read_a_chunk_at_a_time_in_order_then_deleted(tmp_path: Path) -> None:
    path, states = states_file(tmp_path, 7)
    repair_file = RepairFile(path, 7)
    chunks = []
    while chunk := repair_file.chunk(3):
        chunks.append(chunk)
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [pair for chunk in chunks for pair in chunk] == states
    assert not path.exists()


def test_a_state_is_readable_before_its_chunk_and_still_written_with_it(tmp_path: Path) -> None:
    path, states = states_file(tmp_path, 5)
    repair_file = RepairFile(path, 5)
    assert repair_file.chunk(2) == states[:2]
    assert repair_file.get(b"C-3") == states[3][1]
    assert repair_file.get(b"C-0") is None  # already read out: the store holds it
    assert repair_file.chunk(10) == states[2:]
    assert not path.exists()


def test_a_cut_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    path, _states = states_file(tmp_path, 3)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"0\.states: ends inside a state"):
        RepairFile(path, 3).chunk(3)


def test_the_processor_writes_the_files_states_as_stored_and_reads_them_until_then(
    tmp_path: Path,
) -> None:
    path, states = states_file(tmp_path, 4)
    store = DictStore()
    processor = InputProcessor(parse_policy({}), store, partitions=1)
    processor.repair_files[0] = RepairFile(path, 4)
    assert processor.repairs_pending
    # read before it is written: the repaired state, not the store's nothing
    ping = HealthPing(connector_id="C-2", status=HealthStatus.HEALTHY, checked_at=T0)
    outputs = processor.process([Input(Unpacked(ping, 0, "in/0", None, None), 0)])
    assert outputs.states[b"C-2"].state.record.sequence == 3
    written = []
    while (chunk := processor.repairs_chunk(0, 3)) is not None:
        processor.write(chunk)
        written += [key for key, _value, _partition in chunk.stored]
    assert written == [key for key, _value in states]
    assert {key: store.get(key, 0) for key, _ in states} == dict(states)
    assert load_state(store.get(b"C-1", 0) or b"")[0].record.sequence == 2
    assert not processor.repairs_pending
    assert not path.exists()


def test_a_revoked_partitions_file_is_dropped(tmp_path: Path) -> None:
    path, _states = states_file(tmp_path, 2)
    processor = InputProcessor(parse_policy({}), DictStore(), partitions=2)
    processor.repair_files[0] = RepairFile(path, 2)
    processor.keep_owned({1})
    assert not processor.repairs_pending
    assert not path.exists()
