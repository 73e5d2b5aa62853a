"""`load_head` reads only the chain head of a stored state: it must agree with a full
decode for any connector id, and refuse what is not a state of this format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.worker.statecodec import StateFormatError, dump_state, load_head, load_state
from streams.state import ConnectorState


@given(
    connector_id=st.text(min_size=1, max_size=40),
    tenant_id=st.none() | st.text(max_size=20),
    sequence=st.integers(min_value=0, max_value=2**53),
    head_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_the_head_equals_the_full_decode(
    connector_id: str, tenant_id: str | None, sequence: int, head_hash: str
) -> None:
    record = ConnectorState.new(connector_id).record._replace(
        tenant_id=tenant_id, sequence=sequence, head_hash=head_hash
    )
    stored = dump_state(ConnectorState(record), 42)
    state, _ = load_state(stored)
    assert load_head(stored) == (state.record.sequence, state.record.head_hash)


@pytest.mark.parametrize(
    "stored",
    [
        b"",
        b"\xff",
        b"[3,[",
        b'[2,["a",null,1,"h",',
        b'[3,["a",null,1,"h"]]',
        b'[3,["a",null,"x","h",',
    ],
)
def test_what_is_not_a_state_is_refused(stored: bytes) -> None:
    with pytest.raises(StateFormatError):
        load_head(stored)
