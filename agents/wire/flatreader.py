"""A reader of flat Avro records, about twice as fast as fastavro per call for a ping.

Read through fastavro's `schemaless_reader`, a health ping cost ~4 µs, and both of the
worker's processes decode every ping: it was the largest single cost of the decider at
50,000 pings/s (BENCHMARKS.md, P1); this reader takes ~1.8 µs. A ping is a flat record
(strings, longs, booleans, an enum, and nullable ones of those), which reads in a few
lines of Python. `flat_reader` builds such a reader from a schema, or None for a schema
with any other kind of field.

The reader accepts only what it fully understands: any byte it does not (an unknown
union branch or enum symbol, a boolean byte other than 0 or 1, a negative length, a
varint over 64 bits, bytes left over, invalid UTF-8, a read past the end) raises
`FlatReadError`, and the caller reads the bytes again with fastavro, whose answer (the
record or its error) stands. tests/test_flatreader.py holds it equal to fastavro on
random records, on every single-byte corruption of two, and on random edits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FlatReader = Callable[[bytes, int], dict[str, Any]]

_STRING, _LONG, _BOOLEAN, _ENUM = range(4)
# Not "int": fastavro and Avro bound it to 32 bits, which this reader would have to repeat.
_KINDS = {"string": _STRING, "long": _LONG, "boolean": _BOOLEAN}
_MAX_SHIFT = 63
_LONG_BITS = 1 << 64


class FlatReadError(ValueError):
    """Bytes the flat reader does not vouch for: read them with fastavro instead."""


def _kind(field_type: Any) -> tuple[int, tuple[str, ...]] | None:
    if isinstance(field_type, str):
        kind = _KINDS.get(field_type)
        return None if kind is None else (kind, ())
    if isinstance(field_type, dict):
        if field_type.get("type") == "enum":
            return _ENUM, tuple(field_type["symbols"])
        if "logicalType" in field_type:  # e.g. timestamp-millis: read as its plain type
            return _kind(field_type["type"])
    return None


def flat_reader(document: dict[str, Any]) -> FlatReader | None:
    """A reader of records of `document` (a parsed `.avsc`), or None if it is not flat."""
    if document.get("type") != "record":
        return None
    steps: list[tuple[str, int, bool, tuple[str, ...]]] = []
    for field in document["fields"]:
        field_type = field["type"]
        nullable = isinstance(field_type, list)
        if nullable:
            if len(field_type) != 2 or field_type[0] != "null":  # ["null", T]
                return None
            field_type = field_type[1]
        kind = _kind(field_type)
        if kind is None:
            return None
        steps.append((field["name"], kind[0], nullable, kind[1]))
    return _reader(tuple(steps))


def _reader(steps: tuple[tuple[str, int, bool, tuple[str, ...]], ...]) -> FlatReader:
    def read(data: bytes, pos: int) -> dict[str, Any]:
        record: dict[str, Any] = {}
        try:
            for name, kind, nullable, symbols in steps:
                if nullable:
                    branch = data[pos]
                    pos += 1
                    if branch == 0:
                        record[name] = None
                        continue
                    if branch != 2:  # zigzag(1): the second branch
                        raise FlatReadError("union branch")
                if kind is _STRING:
                    size = data[pos]
                    if size < 0x80:  # a one-byte varint
                        pos += 1
                    else:
                        size, pos = _varint(data, pos)
                    if size & 1:
                        raise FlatReadError("negative length")
                    end = pos + (size >> 1)
                    if end > len(data):
                        raise FlatReadError("past the end")
                    record[name] = data[pos:end].decode()
                    pos = end
                elif kind is _LONG:
                    value, pos = _varint(data, pos)
                    record[name] = (value >> 1) ^ -(value & 1)
                elif kind is _BOOLEAN:
                    flag = data[pos]
                    pos += 1
                    if flag > 1:
                        raise FlatReadError("boolean byte")
                    record[name] = flag == 1
                else:
                    index, pos = _varint(data, pos)
                    if index & 1 or index >> 1 >= len(symbols):
                        raise FlatReadError("enum index")
                    record[name] = symbols[index >> 1]
        except (IndexError, UnicodeDecodeError):
            raise FlatReadError("truncated or not UTF-8") from None
        if pos != len(data):
            raise FlatReadError("trailing bytes")
        return record

    return read


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at `pos` (zigzag still applied), and the position after it."""
    byte = data[pos]
    pos += 1
    value = byte & 0x7F
    shift = 7
    while byte & 0x80:
        if shift > _MAX_SHIFT:
            raise FlatReadError("varint over 64 bits")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
    if value >= _LONG_BITS:
        raise FlatReadError("varint over 64 bits")
    return value, pos
