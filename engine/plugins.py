"""Kinds as plugins: registries filled from `importlib.metadata` entry points.

Action kinds (`nudge.actions`), trigger kinds (`nudge.triggers`) and delivery channels
(`nudge.channels`) are all declared as entry points, Nudge's own in its pyproject.toml
exactly like a shop's in theirs (docs/plugins.md). A registry reads its group once,
on first use, not at import: importing engine.actions must stay cheap and must not
import every plugin of the environment.

    ACTION_KINDS = PluginRegistry("nudge.actions", "action kind", check=check_action_kind)
    ACTION_KINDS["email"]        # loads the group on first access

A plugin that fails to import, or loads something that is not what the group expects,
is a PluginError naming the entry point and its distribution: a broken plugin must
never look like an unknown kind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

from engine.errors import NudgeError

T = TypeVar("T")


class PluginError(NudgeError):
    """Raised when an entry point cannot be loaded or does not satisfy its interface."""


def describe(entry_point: EntryPoint) -> str:
    """`name = value` of group (distribution): what a plugin author greps for."""
    dist = entry_point.dist.name if entry_point.dist is not None else "unknown distribution"
    return (
        f"entry point {entry_point.name!r} = {entry_point.value!r} "
        f"in group {entry_point.group!r} (distribution {dist!r})"
    )


class PluginRegistry(MutableMapping[str, T], Generic[T]):
    """A name → object mapping loaded lazily from one entry-point group.

    `check(name, loaded)` returns the object to register (it may unwrap or build it)
    or raises TypeError/ValueError saying what is wrong; that message becomes a
    PluginError naming the entry point. Entries added with `registry[name] = obj`
    after loading (tests, programmatic plugins) live beside the loaded ones.
    """

    def __init__(self, group: str, what: str, check: Callable[[str, Any], T]):
        self.group = group
        self.what = what
        self._check = check
        self._items: dict[str, T] = {}
        self._origins: dict[str, EntryPoint] = {}
        self._loaded = False
        self._loading = False
        self._lock = threading.RLock()

    def _ensure_loaded(self) -> dict[str, T]:
        if self._loaded:
            return self._items
        with self._lock:
            if self._loading:
                # The same thread, from inside an entry point's import: answering from a
                # half-filled registry would make a kind look unknown.
                raise PluginError(
                    f"a {self.what} plugin used the {self.group!r} registry while it was "
                    "being loaded; look kinds up when they are used, not at import"
                )
            if not self._loaded:
                self._loading = True
                try:
                    self._load()
                finally:
                    self._loading = False
                self._loaded = True
        return self._items

    def _load(self) -> None:
        found = entry_points(group=self.group)
        if not found:
            raise PluginError(
                f"no {self.what}s are registered (entry-point group {self.group!r} is empty): "
                "Nudge's own come from its package metadata, so install it "
                "(`pip install -e .` or `make test`)"
            )
        # Filled aside and kept only when every entry point loaded: after a failure the
        # next use tries again and reports the same error, not a half-filled registry.
        items: dict[str, T] = {}
        origins: dict[str, EntryPoint] = {}
        for entry_point in sorted(found, key=lambda ep: ep.name):
            where = describe(entry_point)
            try:
                loaded = entry_point.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                raise PluginError(
                    f"{self.what} plugin failed to import: {where}: {type(exc).__name__}: {exc}"
                ) from exc
            try:
                item = self._check(entry_point.name, loaded)
            except (TypeError, ValueError, AttributeError) as exc:
                raise PluginError(f"{self.what} plugin is not usable: {where}: {exc}") from exc
            if entry_point.name in items:
                raise PluginError(
                    f"{self.what} {entry_point.name!r} is registered twice: "
                    f"{describe(origins[entry_point.name])} and {where}"
                )
            items[entry_point.name] = item
            origins[entry_point.name] = entry_point
        self._items, self._origins = items, origins

    def origin(self, name: str) -> EntryPoint | None:
        """The entry point that registered `name` (None: added in code, or unknown)."""
        self._ensure_loaded()
        return self._origins.get(name)

    def distribution(self, name: str) -> str | None:
        """The distribution whose entry point registered `name`, e.g. "nudge"."""
        entry_point = self.origin(name)
        return entry_point.dist.name if entry_point is not None and entry_point.dist else None

    def reload(self) -> None:
        """Forget everything and read the entry points again on next use (tests, and a
        process that installed a plugin after starting)."""
        with self._lock:
            self._items, self._origins, self._loaded = {}, {}, False

    # MutableMapping: every access loads the group first.
    def __getitem__(self, name: str) -> T:
        return self._ensure_loaded()[name]

    def __setitem__(self, name: str, item: T) -> None:
        with self._lock:
            self._ensure_loaded()[name] = item

    def __delitem__(self, name: str) -> None:
        with self._lock:
            del self._ensure_loaded()[name]
            self._origins.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._ensure_loaded()))

    def __len__(self) -> int:
        return len(self._ensure_loaded())

    def __contains__(self, name: object) -> bool:
        return name in self._ensure_loaded()

    def __repr__(self) -> str:
        state = sorted(self._items) if self._loaded else "not loaded yet"
        return f"PluginRegistry({self.group!r}, {state})"
