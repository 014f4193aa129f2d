"""Channel adapters: where a rendered message leaves Nudge.

A channel takes one outgoing message and either returns (delivered) or raises a
DeliveryFailure saying whether a retry can help. Channels know nothing about rules,
users or policies; those live in the action kinds and engine/delivery/policy.py.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import Message
from typing import Any, Protocol

from engine.delivery.channels.parallel import ParallelSends, concurrency_of, pipelined
from engine.errors import ConfigError
from engine.plugins import PluginError, PluginRegistry, describe


class OutgoingEmail:
    """A complete MIME message; `key` is the outbox idempotency key.

    `message` is the email.message.Message: given, or built on first use by `build()`.
    `wire` is what SMTP sends for it (engine.delivery.email_wire: the same bytes as
    send_message, made without a Message), built on first use by `build_wire()`, or
    None (then SMTP sends `message`). A channel builds only what it reads.
    """

    __slots__ = ("key", "_message", "_build", "_wire", "_build_wire")

    def __init__(
        self,
        key: str,
        message: Message | None = None,
        *,
        build: Callable[[], Message] | None = None,
        build_wire: Callable[[], Any] | None = None,
    ):
        if (message is None) == (build is None):
            raise TypeError("give exactly one of message and build")
        self.key = key
        self._message, self._build = message, build
        self._wire, self._build_wire = None, build_wire

    @property
    def message(self) -> Message:
        if self._message is None:
            self._message = self._build()
        return self._message

    @property
    def wire(self) -> Any:
        if self._wire is None and self._build_wire is not None:
            self._wire, self._build_wire = self._build_wire(), None
        return self._wire

    def __repr__(self) -> str:
        return f"OutgoingEmail(key={self.key!r})"


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


ChannelFactory = Callable[[Any, Any], "Channel | None"]


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
        """The sending pool of channel `name` (its `concurrency` workers, or a new
        `pipeline()` of the channel for this caller when it is `pipelined`), or None
        when each message is sent by `channel.send` on the caller's thread."""
        channel = self.get(name)
        width = concurrency_of(channel)
        if width <= 1:
            # A pipeline belongs to the one caller that asked (it holds a connection
            # and its replies until `finish`): dispatchers on several threads that
            # share this set each get their own.
            return channel.pipeline() if pipelined(channel) else None
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


def check_channel_factory(entry_name: str, loaded: Any) -> ChannelFactory:
    """What an entry point of `nudge.channels` must load: a factory, called per dispatcher."""
    if not callable(loaded):
        raise TypeError(
            f"loaded {type(loaded).__name__}, expected a callable "
            "factory(settings, config) -> Channel | None"
        )
    return loaded


# name -> factory(settings, DeliveryConfig) -> Channel | None; read once, on first use.
CHANNEL_FACTORIES: PluginRegistry[ChannelFactory] = PluginRegistry(
    "nudge.channels", "delivery channel", check=check_channel_factory
)


def build_channels(settings, config=None) -> ChannelSet:
    """The channels nudge.toml configures, one per `nudge.channels` entry point (the
    built-ins use file backends by default: no server needed)."""
    from engine.delivery.config import delivery_config

    config = config or delivery_config(settings)
    built = ChannelSet()
    try:
        for name, factory in CHANNEL_FACTORIES.items():
            channel = factory(settings, config)
            if channel is None:
                continue  # not configured in nudge.toml
            if not all(callable(getattr(channel, m, None)) for m in ("send", "close")):
                origin = CHANNEL_FACTORIES.origin(name)
                where = describe(origin) if origin is not None else f"channel {name!r}"
                raise PluginError(f"{where}: its factory returned {channel!r}, not a Channel")
            built.channels[name] = channel
    except BaseException:
        built.close()  # the ones built so far hold connections and threads
        raise
    return built
