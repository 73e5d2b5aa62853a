"""What a benchmark reads from the environment (its sizes, the broker), checked: a wrong value
is one line for the user, not a traceback."""

from __future__ import annotations

import os


class BenchConfigError(ValueError):
    """A benchmark cannot run as asked; the message says what to change."""


def env_int(name: str, default: int) -> int:
    """A whole number > 0 from the environment variable `name`, else `default`."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BenchConfigError(f"{name}={value!r} is not a whole number") from None
    if number <= 0:
        raise BenchConfigError(f"{name}={value!r}: give a number above 0")
    return number


def env_ints(name: str, default: str) -> list[int]:
    """Whole numbers > 0, comma-separated, from `name` (else from `default`)."""
    value = os.environ.get(name) or default
    try:
        numbers = [int(part) for part in value.split(",")]
    except ValueError:
        raise BenchConfigError(
            f"{name}={value!r} is not a comma-separated list of numbers"
        ) from None
    if any(n <= 0 for n in numbers):
        raise BenchConfigError(f"{name}={value!r}: give numbers above 0")
    return numbers
