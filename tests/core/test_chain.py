"""The fast canonical encoder writes exactly the bytes of the documented definition."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.chain import HASHED_FIELDS, SeenHashes, canonical_bytes, reference_canonical_bytes
from streams.checkpoint import HeadsDigest, heads_digest
from streams.models import EventType, RecoveryMode

# Any text that can be UTF-8 encoded (lone surrogates cannot, in either encoder).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
OPTIONAL_TEXT = st.none() | TEXT
INTEGER = st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits too

FIELDS = st.fixed_dictionaries(
    {
        "event_id": TEXT,
        "type": st.sampled_from(EventType),
        "connector_id": TEXT,
        "tenant_id": OPTIONAL_TEXT,
        "sequence": INTEGER,
        "occurred_at": INTEGER,
        "incident_id": OPTIONAL_TEXT,
        "attempt": st.none() | INTEGER,
        "mode": st.none() | st.sampled_from(RecoveryMode),
        "actor": OPTIONAL_TEXT,
        "failure": OPTIONAL_TEXT,
        "attributes": st.dictionaries(TEXT, TEXT, max_size=6),
        "prev_hash": TEXT,
    }
)


@given(FIELDS)
def test_canonical_bytes_equal_the_reference_encoder(fields: dict[str, Any]) -> None:
    assert set(fields) == set(HASHED_FIELDS)
    assert canonical_bytes(fields) == reference_canonical_bytes(fields)


def test_escapes_match_rfc_8785() -> None:
    fields = {
        "event_id": 'a"\\\b\f\n\r\t\x00\x1f\x7f\u2028é😀/',
        "attributes": {"b": "1", "a": "2"},
    }
    assert canonical_bytes(fields) == reference_canonical_bytes(fields)
    assert b'"a\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f\x7f' in canonical_bytes(fields)
    assert b'"attributes":{"a":"2","b":"1"}' in canonical_bytes(fields)


HASHES = st.sampled_from(["0" * 64, "A" * 64, "xyz", ""]) | st.text(
    "0123456789abcdef", min_size=64, max_size=64
)


@given(st.lists(st.tuples(st.integers(-3, 20_000), HASHES), max_size=40))
def test_seen_hashes_remember_like_a_dict(writes: list[tuple[int, str]]) -> None:
    seen, expected = SeenHashes(), {}
    for sequence, hash_hex in writes:
        seen[sequence] = hash_hex
        expected[sequence] = hash_hex
    for sequence in {s for s, _ in writes} | {0, 1, 2, 5_000, 30_000}:
        assert seen.get(sequence) == expected.get(sequence)


def test_heads_digest_is_the_sha256_of_sorted_lines_however_it_is_sliced() -> None:
    heads = {f"C-{index:03d}": (index + 1, f"{index:064x}") for index in reversed(range(25))}
    lines = "".join(f"C-{i:03d}\t{i + 1}\t{i:064x}\n" for i in range(25))
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert heads_digest(heads) == expected
    for lines_per_slice in (1, 7, 25, 100):
        digest = HeadsDigest(heads)
        slices = 0
        while not digest.done:
            digest.update(lines_per_slice)
            slices += 1
        assert slices == -(-25 // lines_per_slice)
        assert digest.hexdigest() == expected


def test_a_heads_digest_is_not_read_before_every_head_is_hashed() -> None:
    digest = HeadsDigest({"A": (1, "0" * 64), "B": (1, "1" * 64)})
    digest.update(1)
    with pytest.raises(ValueError, match="1 heads not digested"):
        digest.hexdigest()
