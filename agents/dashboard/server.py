"""The admin page's routes (aiohttp), mountable in any aiohttp application: the standalone
`connector-recovery dashboard` and the worker's Faust web server (which is aiohttp too).

    GET  {prefix}/                 the page            GET  {prefix}/api/state       JSON
    GET  {prefix}/fragment         its live part       GET  {prefix}/api/connector?id=
    GET  {prefix}/timeline?id=     a timeline (HTML)   POST {prefix}/api/actions     act
    GET  {prefix}/events           server-sent events: `change`, with the live part as a JSON
                                   string, whenever the user's view changed
    GET/POST {prefix}/login, POST {prefix}/logout, GET {prefix}/static/...

Every route but static and login resolves the user first and cuts every view to the user's
tenant (agents/dashboard/board.py); an action needs the CSRF token and a user in `admins`,
publishes the CLI's command with the user as actor and answers with the decider's verdict
read from the audit topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from agents.admin import build_command, connector_of_incident, outage_target, send_and_wait
from agents.audit.follow import AuditFollower
from agents.broker.client import describe
from agents.dashboard.auth import TOKEN_COOKIE, Gate, Refused, User
from agents.dashboard.board import Board, TimelineSource, now_ms
from agents.dashboard.page import (
    render_live,
    render_login,
    render_page,
    render_timeline,
    slo_from_alerts,
)
from agents.settings import Settings
from streams.grouping import is_outage_key
from streams.models import AdminAction, AdminCommand, AuditEvent, EventType
from streams.policy import Policy

log = logging.getLogger("connector_recovery.dashboard")

PREFIX = "/dashboard"
STATIC = Path(__file__).parent / "static"
# In a checkout, the rules next to the code; an installed package has none unless told
# (`dashboard --alert-rules`), and the charts then say the SLO is unknown.
ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
PAGE_ACTIONS = {
    AdminAction.ACKNOWLEDGE,
    AdminAction.RECOVER,
    AdminAction.RESOLVE,
    AdminAction.SILENCE,
}
ANSWER_TIMEOUT_S = 30.0
# A page's event stream: a comment this often keeps proxies from closing it; after a
# `change` the next one waits this long, so a burst of events costs one refresh.
KEEPALIVE_S = 15.0
COALESCE_S = 0.2
SESSION_S = 12 * 3600
MAX_SILENCE_MINUTES = 7 * 24 * 60
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Send = Callable[[Settings, AdminCommand, float], Awaitable[list[AuditEvent]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=SECURITY_HEADERS)


def _api(
    handler: Callable[[Dashboard, web.Request, User], Awaitable[web.StreamResponse]],
) -> Callable[[Dashboard, web.Request], Awaitable[web.StreamResponse]]:
    """A route behind sign-in: the handler gets the user; a refusal is a JSON error."""

    async def wrapped(self: Dashboard, request: web.Request) -> web.StreamResponse:
        try:
            user = self._user(request)
            return await handler(self, request, user)
        except Refused as refused:
            return _json({"error": refused.message}, refused.status)

    return wrapped


class Dashboard:
    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        follower: AuditFollower,
        *,
        alert_rules: Path = ALERT_RULES,
        send: Send = send_and_wait,
        prefix: str = PREFIX,
        timelines: TimelineSource | None = None,
    ) -> None:
        self.settings = settings
        self.board = Board(settings, follower, timelines)
        self.gate = Gate(policy)
        self.slo_s = slo_from_alerts(alert_rules)
        self.send = send
        self.prefix = prefix
        self.closing = False

    def mount(self, app: web.Application) -> None:
        p = self.prefix
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/", self.page),
            ("GET", "/fragment", self.fragment),
            ("GET", "/timeline", self.timeline_html),
            ("GET", "/events", self.events),
            ("GET", "/api/state", self.state),
            ("GET", "/api/connector", self.connector),
            ("POST", "/api/actions", self.act),
            ("GET", "/login", self.login_form),
            ("POST", "/login", self.login),
            ("POST", "/logout", self.logout),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, p + path, handler)
        app.router.add_get(p, self._to_page)
        app.router.add_static(p + "/static", STATIC)
        app.on_shutdown.append(self._close_streams)

    async def _close_streams(self, _app: web.Application) -> None:
        self.closing = True
        await self.board.close()

    # -- who ------------------------------------------------------------------------------
    def _user(self, request: web.Request) -> User:
        return self.gate.identify(request.headers, request.cookies)

    async def _to_page(self, _request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(self.prefix + "/")

    # -- pages ----------------------------------------------------------------------------
    def _snapshot(self, user: User) -> dict[str, Any]:
        if user.scope.tenant is None:
            self.board.broker.request()
        return self.board.snapshot(user.scope)

    async def page(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self._user(request)
        except Refused as refused:
            if refused.status == 401:
                return _html(render_login(self.prefix, None), 401)
            return _html(render_login(self.prefix, refused.message), refused.status)
        csrf = self.gate.csrf_token(user)
        return _html(render_page(self._snapshot(user), user, csrf, self.prefix, self.slo_s))

    @_api
    async def fragment(self, _request: web.Request, user: User) -> web.StreamResponse:
        return _html(render_live(self._snapshot(user), self.slo_s, may_act=user.may_act))

    @_api
    async def timeline_html(self, request: web.Request, user: User) -> web.StreamResponse:
        timeline = await self.board.timeline(user.scope, request.query.get("id", ""))
        if timeline is None:
            return _html('<p class="error">no such connector</p>', 404)
        return _html(render_timeline(timeline, may_act=user.may_act))

    @_api
    async def state(self, _request: web.Request, user: User) -> web.StreamResponse:
        return _json(self._snapshot(user))

    @_api
    async def connector(self, request: web.Request, user: User) -> web.StreamResponse:
        timeline = await self.board.timeline(user.scope, request.query.get("id", ""))
        if timeline is None:
            return _json({"error": "no such connector"}, 404)
        return _json(timeline)

    @_api
    async def events(self, request: web.Request, user: User) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        await response.prepare(request)
        seen: tuple[int, bool, str | None] | None = None
        try:
            while not self.closing:
                follower = self.board.follower
                now = (
                    self.board.version(user.scope),
                    follower.caught_up.is_set(),
                    follower.problem,
                )
                if now != seen:
                    seen = now
                    # The new fragment itself (one JSON line): no request back for it.
                    fragment = json.dumps(
                        render_live(self._snapshot(user), self.slo_s, may_act=user.may_act)
                    )
                    await response.write(f"event: change\ndata: {fragment}\n\n".encode())
                    await asyncio.sleep(COALESCE_S)
                    continue
                if not await self.board.wait_for_change(KEEPALIVE_S):
                    await response.write(b": keepalive\n\n")
        except ConnectionResetError:
            pass  # the page was closed
        return response

    # -- acting ---------------------------------------------------------------------------
    @_api
    async def act(self, request: web.Request, user: User) -> web.StreamResponse:
        self.gate.check_action(user, request.headers)
        try:
            body = await request.json()
            action = AdminAction(body["action"])
            target = str(body["target"])
            if action not in PAGE_ACTIONS:
                raise ValueError(f"the page does not {action.value}")
            outage = is_outage_key(target)
            if outage and action is AdminAction.SILENCE:
                raise ValueError("an outage is not silenced: silence its connectors")
            incident = action in (AdminAction.ACKNOWLEDGE, AdminAction.RESOLVE)
            if outage:
                connector_id = outage_target(target)[0]
            else:
                connector_id = connector_of_incident(target) if incident else target
            reason = body.get("reason") or None
            until = None
            if action is AdminAction.SILENCE:
                minutes = int(body.get("minutes", 60))
                if not 1 <= minutes <= MAX_SILENCE_MINUTES:
                    raise ValueError(f"minutes must be 1..{MAX_SILENCE_MINUTES}")
                until = now_ms() + minutes * 60_000
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
            return _json({"error": f"bad action request: {error}"}, 400)
        if outage:
            allowed = self.board.may_act_on_outage(user.scope, target)
            if allowed is None:
                return _json({"error": f"no such open outage: {target}"}, 404)
            if not allowed:
                return _json(
                    {
                        "error": f"{target} spans tenants (a shared dependency): only a"
                        " platform user acts on it; act on your connectors of it"
                    },
                    403,
                )
        elif self.board.visible(user.scope, connector_id) is None:
            return _json({"error": f"no such connector: {connector_id}"}, 404)
        command = build_command(action, target, user.name, reason=reason, until_ms=until)
        try:
            answers = await self.send(self.settings, command, ANSWER_TIMEOUT_S)
        except Exception as error:  # the broker is unreachable: one line
            return _json({"error": f"could not publish the command: {describe(error)}"}, 503)
        if not answers:
            return _json(
                {"error": f"no answer within {ANSWER_TIMEOUT_S:g}s: is a worker running?"}, 504
            )
        rejected = next((e for e in answers if e.type is EventType.COMMAND_REJECTED), None)
        return _json(
            {
                "command_id": command.command_id,
                "action": action.value,
                "target": target,
                "actor": user.name,
                "verdict": "rejected" if rejected else "accepted",
                "reason": rejected.attributes.get("rejection") if rejected else None,
                "events": [
                    {"type": e.type.value, "event_id": e.event_id, "actor": e.actor}
                    for e in answers
                ],
            }
        )

    # -- signing in -----------------------------------------------------------------------
    async def login_form(self, _request: web.Request) -> web.StreamResponse:
        return _html(render_login(self.prefix, None))

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = str(form.get("token", ""))
        try:
            user = self.gate.by_token(token)
        except Refused as refused:
            return _html(render_login(self.prefix, refused.message), refused.status)
        if user is None:
            return _html(render_login(self.prefix, "unknown token: try again"), 401)
        redirect = web.HTTPSeeOther(self.prefix + "/")
        redirect.set_cookie(
            TOKEN_COOKIE,
            token,
            path=self.prefix,
            max_age=SESSION_S,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        raise redirect

    async def logout(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            user = self._user(request)
            self.gate.check_csrf(user, str(form.get("csrf", "")))
        except Refused as refused:
            return _html(render_login(self.prefix, refused.message), refused.status)
        redirect = web.HTTPSeeOther(self.prefix + "/login")
        redirect.del_cookie(TOKEN_COOKIE, path=self.prefix)
        raise redirect


def views_dir(settings: Settings, port: int) -> Path:
    """Where a standalone page keeps its views' snapshot and timeline index: beside the
    worker's data, in `views/dashboard`, so a page restarted on another port still starts
    from its snapshot. A second page running at the same time on the same data dir takes
    `views/dashboard-<port>` instead: a folder is held by one process (a lock held as long
    as the process lives; the timeline index is a RocksDB that one process opens)."""
    root = settings.worker_data_dir / "views"
    for folder in (root / "dashboard", root / f"dashboard-{port}"):
        if _hold(folder):
            return folder
    return folder  # the port's own: RocksDB says so if another process holds it after all


_HELD: list[int] = []  # the lock files' descriptors, open for the process's life


def _hold(folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / "held-by-process.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return False
    _HELD.append(descriptor)
    return True


async def serve(
    settings: Settings, policy: Policy, host: str, port: int, alert_rules: Path = ALERT_RULES
) -> None:
    """`connector-recovery dashboard`: a follower of the audit topic and the page, until
    cancelled. Takes the port and connects to the broker first (no URL is printed for a
    page that cannot work), prints the page's URL, then `ready` once the views have caught
    up."""
    follower = AuditFollower(settings, views_dir(settings, port))
    dashboard = Dashboard(settings, policy, follower, alert_rules=alert_rules)
    app = web.Application()
    dashboard.mount(app)
    app.router.add_get("/", dashboard._to_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    following: asyncio.Task[None] | None = None
    stop = asyncio.Event()  # SIGTERM or SIGINT: stop cleanly (the views are snapshotted)
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        await follower.connect()
        following = asyncio.create_task(follower.run())
        print(f"admin page: http://{host}:{port}{PREFIX}/", flush=True)
        caught_up = asyncio.create_task(follower.caught_up.wait())
        stopping = asyncio.create_task(stop.wait())
        ends = {following, stopping}
        await asyncio.wait({caught_up, *ends}, return_when=asyncio.FIRST_COMPLETED)
        if caught_up.done():
            print("ready", flush=True)
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        caught_up.cancel()
        stopping.cancel()
        if following.done():
            following.result()  # the follower's error, if it stopped by itself
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        else:
            await follower.disconnect()
        await runner.cleanup()
