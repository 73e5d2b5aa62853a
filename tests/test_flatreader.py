"""agents/wire/flatreader.py against fastavro: the same record for every valid one, and
nothing fastavro would not give for corrupted bytes (the reader raises, and the codec asks
fastavro)."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.wire.codec import SchemaVersion, registry
from agents.wire.flatreader import FlatReadError, flat_reader

LONGS = st.integers(-(2**63), 2**63 - 1)
FLAT = sorted(
    (v for v in registry().versions if v.current and v.flat is not None),
    key=lambda v: v.short_name,
)


def _field_values(field_type: Any) -> st.SearchStrategy[Any]:
    if isinstance(field_type, list):  # ["null", T]
        return st.none() | _field_values(field_type[1])
    if isinstance(field_type, dict):
        if field_type["type"] == "enum":
            return st.sampled_from(field_type["symbols"])
        return _field_values(field_type["type"])
    return {"string": st.text(), "long": LONGS, "boolean": st.booleans()}[field_type]


def records_of(version: SchemaVersion) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {f["name"]: _field_values(f["type"]) for f in version.document["fields"]}
    )


def _fastavro(version: SchemaVersion, body: bytes) -> dict[str, Any]:
    buffer = io.BytesIO(body)
    record = fastavro.schemaless_reader(buffer, version.parsed, None)
    assert buffer.tell() == len(body), "fastavro left bytes over"
    assert isinstance(record, dict)
    return record


def _body(version: SchemaVersion, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, version.parsed, record)
    return buffer.getvalue()


def test_the_inputs_that_come_per_ping_are_read_flat() -> None:
    """The speed is the point: a schema change that made them not flat must be seen."""
    assert {"HealthPing", "Tick", "Watch", "AdminCommand"} <= {v.short_name for v in FLAT}


def test_other_shapes_are_not_read_flat() -> None:
    assert flat_reader({"type": "record", "name": "A", "fields": []}) is not None
    for field_type in ("int", "double", "bytes", ["string", "null"], ["null", "long", "string"]):
        document = {"type": "record", "name": "A", "fields": [{"name": "a", "type": field_type}]}
        assert flat_reader(document) is None, field_type
    assert flat_reader({"type": "enum", "name": "E", "symbols": ["A"]}) is None


@pytest.mark.parametrize("version", FLAT, ids=lambda v: v.short_name)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_valid_record_reads_as_fastavro_reads_it(version: SchemaVersion, data: Any) -> None:
    record = data.draw(records_of(version))
    body = _body(version, record)
    assert version.flat is not None
    assert version.flat(b"\x00" * 10 + body, 10) == _fastavro(version, body) == record


@pytest.mark.parametrize("version", FLAT, ids=lambda v: v.short_name)
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_corrupted_bytes_read_as_fastavro_reads_them_or_not_at_all(
    version: SchemaVersion, data: Any
) -> None:
    body = bytearray(_body(version, data.draw(records_of(version))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body)))
        edit = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if edit == "set" and at < len(body):
            body[at] = data.draw(st.integers(0, 255))
        elif edit == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=10))
        elif edit == "delete":
            del body[at : at + data.draw(st.integers(1, 4))]
        else:
            del body[at:]
    assert version.flat is not None
    try:
        read = version.flat(b"\x00" * 10 + bytes(body), 10)
    except FlatReadError:
        return  # the codec asks fastavro, whose answer stands
    assert read == _fastavro(version, bytes(body))


@pytest.mark.parametrize("version", FLAT, ids=lambda v: v.short_name)
def test_every_single_byte_corruption_reads_as_fastavro_reads_it_or_not_at_all(
    version: SchemaVersion,
) -> None:
    """Exhaustive over one record with every optional field set, and one with none."""
    for fill in (True, False):
        record = {f["name"]: _sample(f["type"], fill) for f in version.document["fields"]}
        body = _body(version, record)
        for at in range(len(body)):
            for byte in range(256):
                corrupt = body[:at] + bytes([byte]) + body[at + 1 :]
                assert version.flat is not None
                try:
                    read = version.flat(b"\x00" * 10 + corrupt, 10)
                except FlatReadError:
                    continue
                assert read == _fastavro(version, corrupt), (at, byte)


def _sample(field_type: Any, fill: bool) -> Any:
    if isinstance(field_type, list):
        return _sample(field_type[1], fill) if fill else None
    if isinstance(field_type, dict):
        if field_type["type"] == "enum":
            return field_type["symbols"][-1]
        return _sample(field_type["type"], fill)
    return {"string": "ab\u00e9", "long": 1_764_478_000_000, "boolean": True}[field_type]


def test_the_codec_falls_back_to_fastavro_for_what_it_does_not_read() -> None:
    """A varint longer than 64 bits is not read flat; the caller gets fastavro's answer
    (which wraps it to a 64-bit long)."""
    reg = registry()
    version = reg.current["Tick"]
    good = reg.codec("Tick").encode({"connector_id": "c", "now": 1})
    assert reg.decode_any(good) == ("Tick", {"connector_id": "c", "now": 1})
    overlong = good[:-1] + b"\xff" * 10 + b"\x01"  # `now` as an 11-byte varint
    assert version.flat is not None
    with pytest.raises(FlatReadError):
        version.flat(overlong, 10)
    assert reg.decode_any(overlong) == ("Tick", _fastavro(version, overlong[10:]))
