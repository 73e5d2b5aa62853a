"""Avro single-object encoding (Avro specification, "Single-object encoding").

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
    Canonical Form | Avro binary body

Every `.avsc` in `schemas/` (current) and `schemas/history/` (older versions kept for
evolution) is parsed once, at start-up. A reader looks the writer schema up by fingerprint
and resolves it to the current version of the same record, so any client in any language
can decode with the `.avsc` files alone.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from agents.wire.flatreader import FlatReader, FlatReadError, flat_reader
from schemas import HISTORY_DIR, SCHEMA_DIR

MAGIC = b"\xc3\x01"
_EMPTY = 0xC15D213AA4D7A795


class AvroCodecError(ValueError):
    """Bytes that are not a valid single-object encoded record of a known schema."""


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _rabin_table()


def crc64_avro(data: bytes) -> int:
    """The 64-bit Rabin fingerprint of the Avro specification."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def _strip_logical_types(node: Any) -> Any:
    # Timestamps stay plain epoch-millis ints in Python; logicalType is not part of the
    # Parsing Canonical Form, so fingerprints are unaffected.
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


@dataclass(frozen=True)
class SchemaVersion:
    name: str  # full name, e.g. io.connector_recovery.HealthPing
    path: Path
    document: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # 8 bytes, little endian
    current: bool
    short_name: str = field(init=False)  # e.g. HealthPing: asked of every record decoded
    flat: FlatReader | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "short_name", self.name.rsplit(".", 1)[-1])
        object.__setattr__(self, "flat", flat_reader(self.document))


def _fingerprint(document: Any) -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, little endian."""
    canonical = fastavro.schema.to_parsing_canonical_form(document)
    return crc64_avro(canonical.encode()).to_bytes(8, "little")


def _load(path: Path, current: bool) -> SchemaVersion:
    document = json.loads(path.read_text())
    parsed = fastavro.parse_schema(_strip_logical_types(document))
    name = f"{document.get('namespace', '')}.{document['name']}".lstrip(".")
    return SchemaVersion(name, path, document, parsed, _fingerprint(document), current)


class SchemaRegistry:
    """All schema versions shipped in `schemas/`, by fingerprint and by record name."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR) -> None:
        versions = [_load(p, True) for p in sorted(schema_dir.glob("*.avsc"))]
        versions += [_load(p, False) for p in sorted(history_dir.glob("*.avsc"))]
        self.versions = versions
        self.by_fingerprint: dict[bytes, SchemaVersion] = {}
        for version in versions:
            clash = self.by_fingerprint.get(version.fingerprint)
            if clash is not None:
                raise AvroCodecError(
                    f"{version.path.name} and {clash.path.name} share fingerprint "
                    f"{version.fingerprint.hex()}: a new version must change the canonical form"
                )
            self.by_fingerprint[version.fingerprint] = version
        self.current: dict[str, SchemaVersion] = {v.short_name: v for v in versions if v.current}

    def codec(self, short_name: str) -> SingleObjectCodec:
        return SingleObjectCodec(self, self.current[short_name])

    def version_of(self, document: Any) -> SchemaVersion | None:
        """The shipped version a schema (as JSON) is, by its Parsing Canonical Form: e.g. the
        writer schema an Avro container file declares. None for any other schema."""
        try:
            fingerprint = _fingerprint(document)
        except Exception:  # whatever fastavro rejects is no version of ours
            return None
        return self.by_fingerprint.get(fingerprint)

    def short_name_of(self, data: bytes) -> str:
        """The record type of single-object encoded bytes, from their fingerprint alone."""
        return self._writer(data).short_name

    def decode_any(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode bytes of any known record type: (short record name, record)."""
        writer = self._writer(data)
        reader = self.current.get(writer.short_name)
        if reader is None:
            raise AvroCodecError(f"no current schema for record {writer.name}")
        return writer.short_name, _read(data, writer, reader)

    def _writer(self, data: bytes) -> SchemaVersion:
        if len(data) < 10 or data[:2] != MAGIC:
            raise AvroCodecError("not Avro single-object encoded (missing C3 01 header)")
        writer = self.by_fingerprint.get(bytes(data[2:10]))
        if writer is None:
            raise AvroCodecError(f"unknown schema fingerprint {bytes(data[2:10]).hex()}")
        return writer


def _read(data: bytes, writer: SchemaVersion, reader: SchemaVersion) -> dict[str, Any]:
    if writer is reader and writer.flat is not None:
        try:
            return writer.flat(data, 10)
        except FlatReadError:
            pass  # what fastavro makes of the bytes stands, its error included
    buffer = io.BytesIO(data)
    buffer.seek(10)
    try:
        if writer is reader:
            record = fastavro.schemaless_reader(buffer, writer.parsed, None)
        else:
            record = fastavro.schemaless_reader(buffer, writer.parsed, reader.parsed)
    except Exception as error:  # fastavro raises many kinds on corrupt input
        raise AvroCodecError(
            f"corrupt {writer.short_name} body: {type(error).__name__}: {error}"
        ) from None
    if buffer.tell() != len(data):
        raise AvroCodecError(
            f"{len(data) - buffer.tell()} trailing bytes after the {writer.short_name} record"
        )
    if not isinstance(record, dict):
        raise AvroCodecError(f"{writer.short_name} body is not a record")
    return record


class SingleObjectCodec:
    """Encoder/decoder of one record type (current schema), reading older versions too."""

    def __init__(self, registry: SchemaRegistry, schema: SchemaVersion) -> None:
        self.registry = registry
        self.schema = schema
        self._header = MAGIC + schema.fingerprint

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._header)
        try:
            fastavro.schemaless_writer(buffer, self.schema.parsed, record)
        except Exception as error:
            raise AvroCodecError(f"cannot encode {self.schema.short_name}: {error}") from None
        return buffer.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        writer = self.registry._writer(data)
        if writer.name != self.schema.name:
            raise AvroCodecError(f"expected {self.schema.short_name}, got {writer.short_name}")
        return _read(data, writer, self.schema)


@cache
def registry() -> SchemaRegistry:
    """The process-wide registry: every schema file is parsed once."""
    return SchemaRegistry()
