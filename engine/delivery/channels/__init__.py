"""Channel adapters: where a rendered message leaves Nudge.

A channel takes one outgoing message and either returns (delivered) or raises a
DeliveryFailure saying whether a retry can help. Channels know nothing about rules,
users or policies; those live in the action kinds and engine/delivery/policy.py.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from typing import Any, Protocol

from engine.delivery.channels.parallel import ParallelSends, concurrency_of
from engine.errors import ConfigError


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """A complete MIME message; `key` is the outbox idempotency key."""

    key: str
    message: Message


@dataclass(frozen=True, slots=True)
class OutgoingJson:
    """A JSON POST (SMS gateway or webhook), signed with Standard Webhooks headers."""

    key: str
    url: str
    body: dict[str, Any]
    timestamp: datetime
    secret: str | None = None


class Channel(Protocol):
    def send(self, message: Any) -> None:
        """Deliver or raise engine.delivery.context.DeliveryFailure."""

    def close(self) -> None: ...


@dataclass
class ChannelSet:
    """The channels of one dispatcher, by outbox channel name (email, sms, webhook...).

    A channel with `concurrency` > 1 gets a small pool of sending threads
    (`parallel(name)`, engine.delivery.channels.parallel), shut down by `close()`.
    """

    channels: dict[str, Channel] = field(default_factory=dict)
    _parallel: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def get(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.channels), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"no delivery channel {name!r} is configured{hint}") from None

    def parallel(self, name: str):
        """The sending pool of channel `name`, or None when it sends one at a time."""
        channel = self.get(name)
        width = concurrency_of(channel)
        if width <= 1:
            return None
        with self._lock:
            pool = self._parallel.get(name)
            if pool is None or pool.channel is not channel:
                pool = self._parallel[name] = ParallelSends(channel, width, name)
            return pool

    def close(self) -> None:
        with self._lock:
            pools, self._parallel = list(self._parallel.values()), {}
        for pool in pools:  # in-flight sends finish before their channel closes
            pool.close()
        for channel in self.channels.values():
            channel.close()

    def __enter__(self) -> ChannelSet:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class NoopChannel:
    """Accepts everything and counts it: benchmarks and tests of the dispatcher itself."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)

    def close(self) -> None:
        pass


def build_channels(settings, config=None) -> ChannelSet:
    """The channels nudge.toml configures (file backends by default: no server needed)."""
    from engine.delivery.channels.file import FileEmailChannel, FileJsonChannel
    from engine.delivery.config import delivery_config

    config = config or delivery_config(settings)
    base = settings.project_dir
    channels: dict[str, Channel] = {}
    if config.email.backend == "smtp":
        from engine.delivery.channels.smtp import SmtpChannel

        channels["email"] = SmtpChannel.from_config(config.email)
    else:
        channels["email"] = FileEmailChannel(base / config.email.folder)
    for name in ("sms", "webhook"):
        section = getattr(config, name)
        if section.backend == "http":
            from engine.delivery.channels.http import HttpChannel

            channels[name] = HttpChannel(timeout=section.timeout, concurrency=section.concurrency)
        else:
            channels[name] = FileJsonChannel(base / section.folder)
    return ChannelSet(channels)
