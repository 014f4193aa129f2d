"""What keeps `nudge serve` safe to expose: signed expiring tokens, a request body
limit, a per-IP rate limit, security headers and pages that never show a traceback.

Click tokens are `<payload, base64url JSON>.<HMAC-SHA256, base64url, 22 chars>`,
signed with NUDGE_SERVE_SECRET (the environment only, never nudge.toml). The payload
names the user, rule, decision, channel, target URL and expiry (Unix seconds); any
change to it breaks the signature, so a tampered target is refused, never followed.
"""

from __future__ import annotations

import html
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.creatives.links import (
    SERVE_SECRET_ENV,
    b64url,
    same_signature,
    signature_of,
    unb64url,
)

SECRET_ENV = SERVE_SECRET_ENV
# The secret the email/SMS renderer signs landing-page tokens (`?t=`) with.
LANDING_SECRET_ENV = "NUDGE_SECRET_KEY"
_CLICK_DOMAIN = b"nudge-click-v1\n"

# The pages are self-contained: inline CSS, a data: favicon, forms posting to
# themselves, no scripts, no frames.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def secret_from_env(name: str = SECRET_ENV, environ: dict[str, str] | None = None) -> bytes | None:
    value = (os.environ if environ is None else environ).get(name)
    return value.encode() if value else None


# -- click tokens


@dataclass(frozen=True, slots=True)
class ClickToken:
    user_id: str
    rule_id: str
    decision_id: int | None
    channel: str  # "email" or "sms"
    url: str
    expires_at: int  # Unix seconds


class TokenError(ValueError):
    """A token that is malformed, forged or tampered with (`expired` False) or expired."""

    def __init__(self, message: str, *, expired: bool = False):
        super().__init__(message)
        self.expired = expired


def _click_signature(secret: bytes, payload: str) -> str:
    return signature_of(secret, _CLICK_DOMAIN + payload.encode())


def sign_click(secret: bytes, token: ClickToken) -> str:
    data = {
        "u": token.user_id,
        "r": token.rule_id,
        "d": token.decision_id,
        "c": token.channel,
        "url": token.url,
        "e": token.expires_at,
    }
    payload = b64url(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_click_signature(secret, payload)}"


def verify_click(secret: bytes, text: str, *, now: datetime) -> ClickToken:
    """The token's content; raises TokenError (expired=True only for a genuine old one)."""
    try:
        payload, signature = text.split(".", 1)
    except ValueError:
        raise TokenError("malformed token") from None
    if not same_signature(_click_signature(secret, payload), signature):
        raise TokenError("bad signature")
    try:
        data = json.loads(unb64url(payload))
        token = ClickToken(
            user_id=str(data["u"]),
            rule_id=str(data["r"]),
            decision_id=None if data.get("d") is None else int(data["d"]),
            channel=str(data["c"]),
            url=str(data["url"]),
            expires_at=int(data["e"]),
        )
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed payload") from None
    if now.timestamp() >= token.expires_at:
        raise TokenError("expired", expired=True)
    return token


# -- rate limit


class TokenBucket:
    """Per-key token buckets, in this process only (each uvicorn worker has its own).

    `capacity` requests at once, refilled at `rate` per second. Keys idle long enough to
    be full again are dropped, so memory stays bounded by the recent clients.
    """

    def __init__(self, capacity: float, rate: float, clock=time.monotonic):
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self._buckets[key] = (tokens - 1 if allowed else tokens, now)
            if len(self._buckets) > 10_000:
                self._prune(now)
            return allowed

    def retry_after(self) -> int:
        return max(1, int(1 / self.rate + 0.999))

    def _prune(self, now: float) -> None:
        full_after = self.capacity / self.rate
        for key, (_, last) in list(self._buckets.items()):
            if now - last > full_after:
                del self._buckets[key]


# -- pages


def page(title: str, body_html: str, *, status: int = 200, lang: str = "en") -> HTMLResponse:
    """A small self-contained HTML page (body_html is already escaped)."""
    text = f"""<!doctype html>
<html lang="{html.escape(lang)}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<style>
 body {{ font-family: -apple-system, "Segoe UI", "PingFang SC", Roboto, Helvetica, Arial,
        sans-serif; margin: 0; background: #f6f7f9; color: #1f2328; line-height: 1.6; }}
 main {{ max-width: 520px; margin: 64px auto; padding: 32px 24px; background: #fff;
        border-radius: 16px; box-shadow: 0 1px 3px rgba(0,0,0,.08); text-align: center; }}
 h1 {{ font-size: 24px; margin: 0 0 12px; }}
 button {{ font-size: 17px; padding: 10px 32px; border-radius: 999px; border: 0;
          background: #d9363e; color: #fff; font-weight: 600; cursor: pointer; }}
</style></head>
<body><main><h1>{html.escape(title)}</h1>
{body_html}
</main></body></html>
"""
    return HTMLResponse(text, status_code=status, headers=SECURITY_HEADERS)


def error_page(status: int) -> HTMLResponse:
    titles = {
        400: "This link is not valid",
        404: "Page not found",
        405: "Method not allowed",
        410: "This link has expired",
        413: "Request too large",
        429: "Too many requests",
        500: "Something went wrong",
    }
    title = titles.get(status, "Error")
    text = {
        400: "The link may have been cut or changed. Please use the link from the message.",
        410: "This link is no longer valid.",
        429: "Please wait a moment and try again.",
        500: "Please try again later.",
    }.get(status, "")
    return page(title, f"<p>{html.escape(text)}</p>" if text else "", status=status)


# -- middleware (pure ASGI: no buffering of responses, works with any route)


class SecurityHeadersMiddleware:
    """Adds the security headers to every response that lacks them."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuses a request body over `limit` bytes with 413, before any route reads it.

    A declared Content-Length over the limit is refused at once; a chunked body is read
    up to the limit (bodies here are a few bytes: the one-click form) and replayed.
    """

    def __init__(self, app: ASGIApp, limit: int, prefix_limits: dict[str, int] | None = None):
        self.app = app
        self.limit = limit
        # Larger limits for some path prefixes (the event API's batches), still enforced.
        self.prefix_limits = dict(prefix_limits or {})

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.prefix_limits.items():
            if path.startswith(prefix):
                return limit
        return self.limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    await error_page(413)(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        more = scope["method"] not in ("GET", "HEAD")
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await error_page(413)(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed and scope["method"] not in ("GET", "HEAD"):
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def health_response(ok: bool) -> PlainTextResponse:
    return PlainTextResponse("ok\n" if ok else "unavailable\n", status_code=200 if ok else 503)
