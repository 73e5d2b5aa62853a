"""Avro wire contracts (`*.avsc`). Older versions kept for evolution live in `history/`."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
HISTORY_DIR = SCHEMA_DIR / "history"
