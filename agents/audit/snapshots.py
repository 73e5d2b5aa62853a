"""The live views' snapshot: a `FleetView` and the audit positions it holds (the next
offset of every audit partition), in one file of the process's views directory, so a
restart folds only the events written since (as a Kafka Streams task restores its store
from a checkpoint of changelog offsets, not from the beginning).

The file is JSON lines: a header (format, topic, offsets), the view's small part, the
records in chunks, and a last line with the SHA-256 of every line before it. It is written
to a temporary file and renamed over the old one, so a crash leaves the old snapshot or the
new one, never half of one; a file whose digest or format does not match is not used.
Writing and reading yield to the event loop between chunks: a million connectors never hold
the loop for longer than a chunk takes.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.views import FleetView

log = logging.getLogger("connector_recovery.views")

FILE_FORMAT = 2  # 2: records, open episodes and since-times in tagged chunks
RECORDS_PER_LINE = 2_000
_DIGEST_LINE = b'{"sha256":'  # the last line: the digest of every line before it


class SnapshotError(ValueError):
    """A snapshot file that cannot be used; the message says why."""


@dataclass
class Restored:
    view: FleetView
    cluster: str | None  # the Kafka cluster the snapshot was taken on
    topic: str
    offsets: dict[int, int]  # audit partition -> the next offset to fold


class SnapshotFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def save(
        self, view: FleetView, cluster: str | None, topic: str, offsets: dict[int, int]
    ) -> int:
        """Write the view as it is now, with the offsets it holds; returns bytes written.
        The view may go on folding while the file is written: what is written was copied
        before the first await."""
        header = {
            "format": FILE_FORMAT,
            "cluster": cluster,
            "topic": topic,
            "offsets": {str(partition): offset for partition, offset in offsets.items()},
        }
        small = view.snapshot()
        parts = view.parts()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        digest = hashlib.sha256()
        written = 0
        with temporary.open("wb") as file:

            def write(line: bytes) -> None:
                nonlocal written
                digest.update(line)
                file.write(line + b"\n")
                written += len(line) + 1

            write(orjson.dumps(header))
            write(orjson.dumps(small))
            for chunk in parts.wire_chunks(RECORDS_PER_LINE):
                write(orjson.dumps(chunk))
                await asyncio.sleep(0)
            file.write(orjson.dumps({"sha256": digest.hexdigest()}) + b"\n")
            await asyncio.to_thread(_flush, file)
        os.replace(temporary, self.path)
        return written

    async def load(self, ids: Mapping[str, str] | None = None) -> Restored | None:
        """The snapshot, or None if there is none; SnapshotError if it cannot be used. Read
        a line at a time, the view built as it goes and the digest checked at the end: the
        file is never held whole (a million connectors' snapshot is hundreds of MB). `ids`:
        connector ids the process holds already, which the view's records then share (the
        strings a chunk parsed are freed with it, and their memory reused by the next)."""
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SnapshotError(f"cannot read {self.path}: {error}") from None
        digest = hashlib.sha256()
        try:
            with file:
                header = orjson.loads(self._line(file, digest))
                if header.get("format") != FILE_FORMAT:
                    raise SnapshotError(f"{self.path} is of format {header.get('format')!r}")
                view = FleetView.restore(orjson.loads(self._line(file, digest)))
                strings: dict[str, str] = {}  # texts many connectors share, held once
                while True:
                    line = self._line(file, None)
                    if line.startswith(_DIGEST_LINE):
                        break
                    digest.update(line)
                    kind, values = orjson.loads(line)
                    view.add(kind, values, strings, ids)
                    gc.freeze()  # the view is long-lived: out of the collector's full passes
                    await asyncio.sleep(0)
                if orjson.loads(line).get("sha256") != digest.hexdigest() or file.read(1):
                    raise SnapshotError(f"{self.path} does not match its digest")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as error:
            if isinstance(error, SnapshotError):
                raise
            raise SnapshotError(f"{self.path} is unreadable: {error}") from None
        offsets = {int(p): int(o) for p, o in header["offsets"].items()}
        return Restored(view, header.get("cluster"), str(header["topic"]), offsets)

    def _line(self, file: Any, digest: Any) -> bytes:
        line: bytes = file.readline()
        if not line.endswith(b"\n"):
            raise SnapshotError(f"{self.path} is cut short")
        line = line[:-1]
        if digest is not None:
            digest.update(line)
        return line

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _flush(file: Any) -> None:
    file.flush()
    os.fsync(file.fileno())
