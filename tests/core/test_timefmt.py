"""ISO-8601 text of epoch milliseconds: the quick path writes what `strftime` writes."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from streams.timefmt import iso_from_ms, ms_from_iso

YEARS_1000_TO_9999 = st.integers(-30_610_224_000_000, 253_402_300_799_999)


def reference(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


@given(YEARS_1000_TO_9999 | st.integers(1_700_000_000_000, 1_800_000_000_000))
def test_iso_from_ms_writes_what_strftime_writes(epoch_ms: int) -> None:
    assert iso_from_ms(epoch_ms) == reference(epoch_ms)
    assert ms_from_iso(iso_from_ms(epoch_ms)) == epoch_ms


def test_the_edges_of_the_quick_path() -> None:
    for epoch_ms in (0, -1, 999, 1000, -86_400_001, -30_610_224_000_000, 253_402_300_799_999):
        assert iso_from_ms(epoch_ms) == reference(epoch_ms)
    assert iso_from_ms(1_759_148_411_922) == "2025-09-29T12:20:11.922Z"
