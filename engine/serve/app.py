"""`create_app(settings)`: the Starlette app of `nudge serve` (docs/serve.md).

Routes: `/l/<rule>/<variant>` landing pages, `/c/<token>` click tracking,
`/u/<token>` unsubscribe (GET page, POST one-click), `/healthz`, the event API
(`/v1/events`, `/v1/users`, `/openapi.json`: engine/serve/api.py), the read-only
operator console (`/console...`: engine/serve/console/). Every route is
async; database work and rendering run in the thread pool. Middleware, outermost
first: security headers, request body limit. Errors are small HTML pages; an
unexpected exception is logged here and the client sees a generic 500 page.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from engine import clock
from engine.config import Settings
from engine.serve import clicks, landing, unsubscribe
from engine.serve.api import API_BODY_BYTES, API_BURST, API_RATE, API_TOKEN_ENV, api_routes
from engine.serve.console import CONSOLE_BURST, CONSOLE_RATE, console_routes
from engine.serve.console.access import console_token as resolve_console_token
from engine.serve.openapi import OPENAPI
from engine.serve.safety import (
    LANDING_SECRET_ENV,
    SECRET_ENV,
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    TokenBucket,
    TokenError,
    error_page,
    health_response,
    secret_from_env,
)
from engine.store.database import Store

log = logging.getLogger("nudge.serve")
MAX_BODY_BYTES = 16 * 1024  # the one-click form is 26 bytes
UNSUBSCRIBE_BURST = 10
UNSUBSCRIBE_RATE = 0.5  # per second and client IP, per process


def _own_origins(settings: Settings) -> set[str]:
    return {clicks.origin(settings.serve.base_url)} if settings.serve.base_url else set()


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    secret: bytes | None = None,
    landing_secret: bytes | None = None,
    now: Callable[[], datetime] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    rate_limiter: TokenBucket | None = None,
    api_token: bytes | None = None,
    api_rate_limiter: TokenBucket | None = None,
    max_api_body_bytes: int = API_BODY_BYTES,
    console_token: bytes | None = None,
    console_rate_limiter: TokenBucket | None = None,
) -> Starlette:
    """The app; `secret` defaults to NUDGE_SERVE_SECRET, `landing_secret` to
    NUDGE_SECRET_KEY (what the links in rendered messages are signed with), `api_token`
    to NUDGE_API_TOKEN (none: the /v1 event API answers 503), `console_token` to
    NUDGE_CONSOLE_TOKEN, else the API token (none: the console answers 503)."""
    if store is None:
        from engine.store import open_store

        store = open_store(settings)
    secret = secret or secret_from_env(SECRET_ENV)
    landing_secret = landing_secret or secret_from_env(LANDING_SECRET_ENV)
    api_token = api_token or secret_from_env(API_TOKEN_ENV)
    console_token = resolve_console_token(console_token, api_token)
    clock_now = now or clock.utcnow
    limiter = rate_limiter or TokenBucket(UNSUBSCRIBE_BURST, UNSUBSCRIBE_RATE)
    origins = clicks.allowed_origins(settings)
    site_base = clicks.delivery_base_url(settings)
    index: dict[str, Any] = {}

    def landing_pages():
        # Read the rules once, on the first landing request (restart after editing rules).
        if "pages" not in index:
            index["pages"] = landing.landing_index(store)
        return index["pages"]

    async def landing_page(request: Request) -> Response:
        key = (request.path_params["rule"], request.path_params["variant"])
        pages = await run_in_threadpool(landing_pages)
        if key not in pages:
            return error_page(404)
        use, locales = pages[key]
        return await _landing(request, use, locales, request.headers.get("accept-language"))

    async def site_page(request: Request) -> Response:
        # The static site's path, so `[delivery] base_url` may point at this server.
        params = request.path_params
        pages = await run_in_threadpool(landing_pages)
        campaign = request.query_params.get("utm_campaign")
        found = landing.use_for_site_path(pages, params["creative"], params["variant"], campaign)
        if found is None or params["locale"] not in found[1]:
            return error_page(404)
        return await _landing(request, found[0], found[1], params["locale"])

    async def _landing(request: Request, use, locales: list[str], language: str | None):
        text, _ = await run_in_threadpool(
            landing.render_landing,
            store,
            use,
            query=dict(request.query_params),
            accept_language=language,
            locales=locales,
            base_url=site_base,
            landing_secret=landing_secret,
            now=clock_now(),
        )
        return HTMLResponse(text, headers={"cache-control": "private, no-store"})

    async def click(request: Request) -> Response:
        if secret is None:
            return error_page(400)
        try:
            target = await run_in_threadpool(
                clicks.follow_click,
                store,
                secret,
                request.path_params["token"],
                origins=origins,
                now=clock_now(),
                landing_secret=landing_secret,
            )
        except TokenError as exc:
            return error_page(410 if exc.expired else 400)
        return RedirectResponse(target, status_code=302, headers={"cache-control": "no-store"})

    async def unsubscribe_route(request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            response = error_page(429)
            response.headers["retry-after"] = str(limiter.retry_after())
            return response
        token = request.path_params["token"]
        if request.method == "POST":
            await request.body()  # List-Unsubscribe=One-Click, or nothing: both work
            done = await run_in_threadpool(
                unsubscribe.unsubscribe_now, store, token, now=clock_now()
            )
            return done or error_page(404)
        known, locale = await run_in_threadpool(unsubscribe.user_locale, store, token)
        if not known:
            return error_page(404)
        return unsubscribe.confirmation_page(store, locale)

    async def healthz(request: Request) -> Response:
        def ping() -> bool:
            try:
                with store.read() as connection:
                    connection.execute(sa.text("SELECT 1"))
                return True
            except Exception:  # noqa: BLE001 - any failure means unhealthy
                log.exception("health check failed")
                return False

        return health_response(await run_in_threadpool(ping))

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        response = error_page(status if status in (400, 404, 405, 413, 429) else 500)
        if status == 405 and isinstance(exc, HTTPException) and exc.headers:
            response.headers["allow"] = exc.headers.get("Allow", "")  # RFC 9110: required
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return error_page(500)

    routes = [
        Route("/l/{rule}/{variant}", landing_page, methods=["GET"]),
        Route("/c/{token}", click, methods=["GET"]),
        Route("/u/{token}", unsubscribe_route, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *api_routes(
            store,
            token=api_token,
            limiter=api_rate_limiter or TokenBucket(API_BURST, API_RATE),
            now=clock_now,
        ),
        *console_routes(
            store,
            token=console_token,
            limiter=console_rate_limiter or TokenBucket(CONSOLE_BURST, CONSOLE_RATE),
            now=clock_now,
        ),
    ]
    if clicks.origin(site_base) in _own_origins(settings):
        prefix = urlsplit(site_base).path.rstrip("/")
        path = prefix + "/{creative}/{locale}/{variant}.html"
        routes.append(Route(path, site_page, methods=["GET"]))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(
                BodyLimitMiddleware,
                limit=max_body_bytes,
                prefix_limits={"/v1/": max_api_body_bytes},
            ),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.store = store
    return app
