"""Conversions between epoch milliseconds and ISO-8601 text. Pure: no clock is read."""

from datetime import UTC, datetime, timedelta
from functools import lru_cache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Years 1000-9999, where `isoformat` and `strftime("%Y")` write the same four digits.
_FOUR_DIGIT_YEARS_MS = range(-30_610_224_000_000, 253_402_300_800_000)


def iso_from_ms(epoch_ms: int) -> str:
    """`2025-09-29T12:30:00.000Z`: UTC, millisecond precision, `Z` suffix."""
    seconds, millis = divmod(epoch_ms, 1000)
    if epoch_ms in _FOUR_DIGIT_YEARS_MS:  # a report writes one per event: the quick way
        days, seconds = divmod(seconds, 86_400)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        return f"{_date(days)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"


@lru_cache(maxsize=4096)
def _date(days: int) -> str:
    """`2025-09-29`: the date `days` after 1970-01-01."""
    return (_EPOCH + timedelta(days=days)).date().isoformat()


def ms_from_iso(text: str) -> int:
    """Parse ISO-8601; a time without offset is taken as UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
