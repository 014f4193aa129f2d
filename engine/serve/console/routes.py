"""The console's routes: GET only, each behind `ConsoleAccess`, each page built in the
thread pool (the views read the database and the rule files)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from engine.errors import NotFoundError, NudgeError
from engine.serve.console import views
from engine.serve.console.access import ConsoleAccess
from engine.serve.console.render import NO_STORE, Pages
from engine.serve.safety import TokenBucket
from engine.store.database import Store

Handler = Callable[[Request], Awaitable[Response]]


def console_routes(
    store: Store,
    *,
    token: bytes | None,
    limiter: TokenBucket,
    now: Callable[[], datetime],
) -> list[Route]:
    """The /console routes; `token` None shows every page as a 503 saying how to enable it."""
    settings = store.settings
    pages = Pages(settings.shop.name, settings.shop.timezone)
    access = ConsoleAccess(token, limiter, pages)

    def guarded(handler: Handler) -> Handler:
        async def handle(request: Request) -> Response:
            refused = access.refusal(request)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except NotFoundError as exc:
                return pages.notice(404, "Not found", str(exc))
            except NudgeError as exc:
                # An expected engine error (a bad nudge.toml, a rules folder that
                # cannot be read) is for the operator to read, as the CLI prints it.
                return pages.notice(500, "This page cannot be shown", str(exc))

        return handle

    async def rules(request: Request) -> Response:
        context = await run_in_threadpool(views.rules_view, store, now())
        return pages.page("rules.html.jinja", context)

    async def outbox(request: Request) -> Response:
        context = await run_in_threadpool(views.outbox_view, store, now())
        return pages.page("outbox.html.jinja", context)

    async def find_user(request: Request) -> Response:
        # The search form on every page: a form cannot write a path, so redirect to it.
        user_id = request.query_params.get("id", "").strip()
        target = f"/console/users/{quote(user_id, safe='')}" if user_id else "/console"
        return RedirectResponse(target, status_code=303, headers=NO_STORE)

    async def user(request: Request) -> Response:
        rule_id = request.query_params.get("rule", "").strip() or None
        context = await run_in_threadpool(
            views.user_view, store, request.path_params["user_id"], now(), rule_id
        )
        return pages.page("user.html.jinja", context)

    async def report(request: Request) -> Response:
        text, empty = await run_in_threadpool(views.report_view, store, now())
        if text is None:
            return pages.notice(200, "Report", empty, page="report")
        return HTMLResponse(text, headers=NO_STORE)

    return [
        Route("/console", guarded(rules), methods=["GET"]),
        Route("/console/outbox", guarded(outbox), methods=["GET"]),
        Route("/console/users", guarded(find_user), methods=["GET"]),
        Route("/console/users/{user_id:path}", guarded(user), methods=["GET"]),
        Route("/console/report", guarded(report), methods=["GET"]),
    ]
