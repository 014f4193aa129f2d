"""HTTP backend for SMS gateways and webhooks: a JSON POST over a pooled httpx client.

2xx is delivered. 408, 429, 5xx, timeouts and connection errors are transient
(retried with backoff). Any other status is permanent: the action goes dead with
the status and the start of the response recorded, because retrying a 400 or 404
only repeats it.
"""

from __future__ import annotations

import json

import httpx

from engine.delivery.channels import OutgoingJson
from engine.delivery.channels.signing import webhook_headers
from engine.delivery.context import PermanentDeliveryError, TransientDeliveryError

RESPONSE_EXCERPT = 500


class HttpChannel:
    def __init__(
        self, *, timeout: float = 10.0, client: httpx.Client | None = None, concurrency: int = 1
    ):
        # One client for the dispatcher's life: keep-alive connections are reused. It is
        # thread-safe, so `concurrency` requests may be in flight at once
        # (engine.delivery.channels.parallel), each on a connection of its pool.
        self.client = client or httpx.Client(timeout=timeout, follow_redirects=False)
        self.concurrency = max(1, concurrency)

    def send(self, message: OutgoingJson) -> None:
        body = json.dumps(message.body, ensure_ascii=False, separators=(",", ":"))
        headers = webhook_headers(message.key, message.timestamp, body, message.secret)
        headers["content-type"] = "application/json"
        try:
            response = self.client.post(message.url, content=body.encode(), headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError(f"POST {message.url}: timeout ({exc})") from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"POST {message.url}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        excerpt = response.text[:RESPONSE_EXCERPT]
        detail = f"POST {message.url}: HTTP {status}: {excerpt}".rstrip(": ")
        if status in (408, 429) or status >= 500:
            raise TransientDeliveryError(detail)
        raise PermanentDeliveryError(detail)

    def close(self) -> None:
        self.client.close()
