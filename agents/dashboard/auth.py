"""Who is asking: a user of the policy's `dashboard.users`, signed in with a token (kept in
an HttpOnly, SameSite=Strict cookie, or sent as `Authorization: Bearer`), or named by the
trusted reverse proxy's header. Unlisted users see nothing; acting needs the name in the
policy's `admins` too. Every action carries a CSRF token bound to the user (an HMAC under a
secret of this process) and must not come from another site."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from agents.dashboard.board import Scope
from streams.policy import Policy

TOKEN_COOKIE = "cr_dashboard_token"  # noqa: S105 - the cookie's name, not a secret
CSRF_HEADER = "X-CSRF-Token"


class Refused(Exception):
    """A request the page will not serve; `status` is its HTTP status, the message says
    what is wrong and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class User:
    name: str
    scope: Scope
    may_act: bool


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Gate:
    def __init__(self, policy: Policy, secret: bytes | None = None) -> None:
        self.config = policy.dashboard
        self.admins = frozenset(policy.admins)
        self.secret = secret or secrets.token_bytes(32)

    def named(self, name: str) -> User:
        entry = self.config.users.get(name)
        if entry is None:
            raise Refused(
                403, f"user {name!r} is not a dashboard user: add it under dashboard.users"
            )
        return User(name, Scope(entry.tenant), name in self.admins)

    def by_token(self, token: str) -> User | None:
        digest = token_digest(token)
        for name, entry in self.config.users.items():
            if entry.token_sha256 is not None and hmac.compare_digest(entry.token_sha256, digest):
                return self.named(name)
        return None

    def identify(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> User:
        """The user of a request, or `Refused(401)` (sign in) / `Refused(403)`."""
        header = self.config.trusted_header
        if header is not None and headers.get(header):
            return self.named(headers[header])
        authorization = headers.get("Authorization", "")
        token = (
            authorization.removeprefix("Bearer ").strip()
            if authorization.startswith("Bearer ")
            else cookies.get(TOKEN_COOKIE, "")
        )
        if token:
            user = self.by_token(token)
            if user is None:
                raise Refused(401, "that token belongs to no dashboard user: sign in again")
            return user
        raise Refused(401, "sign in with your dashboard token")

    def csrf_token(self, user: User) -> str:
        return hmac.new(self.secret, user.name.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, user: User, sent: str) -> None:
        if not sent or not hmac.compare_digest(sent, self.csrf_token(user)):
            raise Refused(403, "the page's CSRF token is missing or stale: reload the page")

    def check_action(self, user: User, headers: Mapping[str, str]) -> None:
        """Raises `Refused` unless the request may act: same-site, with the user's CSRF
        token, from a user listed in `admins`."""
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise Refused(403, "actions are accepted only from the admin page itself")
        self.check_csrf(user, headers.get(CSRF_HEADER, ""))
        if not user.may_act:
            raise Refused(
                403,
                f"user {user.name!r} is not in the policy's admins: ask a Platform Admin to act",
            )
