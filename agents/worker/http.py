"""Outbound HTTP for executors and the notifier: bounded retries with backoff, a timeout
per attempt, never an exception to the caller — always an `HttpOutcome`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import yarl


@dataclass(frozen=True)
class HttpOutcome:
    ok: bool
    status: int | None
    detail: str
    attempts: int


def origin(url: str) -> str:
    """scheme://host[:port] — webhook URLs often carry a token in their path or query
    (Slack, Teams, PagerDuty), so details and logs name only the origin."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _redacted(detail: str, url: str) -> str:
    safe = origin(url) + "/…"
    for form in {url, str(yarl.URL(url))}:  # aiohttp may print the normalized form
        detail = detail.replace(form, safe)
    return detail


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 5.0,
    attempts: int = 3,
    backoff_s: float = 0.5,
    accept: tuple[int, ...] = (200, 201, 202, 204),
) -> HttpOutcome:
    """POST with retries on network errors, timeouts, 429 and 5xx (not on other 4xx)."""
    detail = "not attempted"
    status: int | None = None
    for attempt in range(1, attempts + 1):
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                status = response.status
                text = (await response.text())[:200]
                if status in accept:
                    return HttpOutcome(True, status, f"HTTP {status}", attempt)
                detail = f"HTTP {status}: {text}".strip()
                if not _retryable(status):
                    return HttpOutcome(False, status, _redacted(detail, url), attempt)
        except TimeoutError:
            detail = f"timed out after {timeout_s:g}s"
        except aiohttp.ClientError as error:
            detail = f"{type(error).__name__}: {error}"
        detail = _redacted(detail, url)
        if attempt < attempts:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    return HttpOutcome(False, status, detail, attempts)
