"""Helpers shared by the kinds' deliver hooks: params parsing and channel sending."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from contextlib import ExitStack
from typing import Any

from pydantic import ValidationError

from engine.delivery.channels.parallel import ParallelSends, quick_switching
from engine.delivery.context import (
    DeliveryContext,
    DeliveryFailure,
    Outcome,
    PlannedAction,
    outcome_of_failure,
)


def parse_params(actions: Sequence[PlannedAction], model) -> tuple[list, dict[int, Outcome]]:
    """(action, params) pairs that validate, and dead outcomes for those that do not.

    A payload that no longer validates (a plugin changed, a row edited by hand) can
    never succeed: dead with the validation message, visible in `nudge status`.
    """
    good, bad = [], {}
    # Actions of one rule share their payload (engine.delivery.claims.planned_actions),
    # so each distinct payload is validated once; params models are frozen.
    verdicts: dict[int, Any] = {}
    for action in actions:
        verdict = verdicts.get(id(action.payload))
        if verdict is None:
            try:
                verdict = model.model_validate(action.params)
            except ValidationError as exc:
                verdict = Outcome.dead("invalid_params", str(exc).replace("\n", "; "))
            verdicts[id(action.payload)] = verdict
        if isinstance(verdict, Outcome):
            bad[action.id] = verdict
        else:
            good.append((action, verdict))
    return good, bad


# The outcome of an action the dispatcher withheld (stopping, or its claim was taken
# over): the dispatcher gives the row back or leaves it to its new holder, and never
# records this; it only matters to a context that withholds without doing so.
NOT_SENT = Outcome.retry("not sent: the dispatcher withheld it (stopping or claim lost)")


def send_each(
    ctx: DeliveryContext,
    items: Sequence[tuple[PlannedAction, Any]],
    build: Callable[[PlannedAction, Any], Any | Outcome],
) -> dict[int, Outcome]:
    """Build each message and hand it to the action's channel; one Outcome per action.

    When the context has a `before_send(action) -> bool` (the dispatcher's
    DispatchContext), it is asked just before each message is built: it moves
    `ctx.now` to the instant of this send (so a webhook-timestamp or an email Date is
    the time it leaves, not the time the batch was claimed), renews the claim's lease
    when due, and says False for an action that must not be sent (stopping, or the row
    was taken over by another dispatcher).

    A channel that takes several messages at once (`ctx.channels.parallel(name)`,
    engine.delivery.channels.parallel) gets each message on a worker thread once it is
    built, up to its `concurrency` in flight; a one-connection channel that is
    `pipelined` (SMTP, by default) gets them in its pipeline, in order, on this thread:
    the next message is checked and built while the server works on the previous one.
    Either way this returns when all have their outcome.
    """
    before_send = getattr(ctx, "before_send", None)
    outcomes: dict[int, Outcome] = {}
    in_flight: list[tuple[PlannedAction, Future]] = []
    unexpected: list[BaseException] = []  # errors that are bugs, not delivery failures
    with _Senders(ctx.channels) as senders:
        try:
            for action, params in items:
                pool = senders.of(action.channel)
                if pool is None:
                    outcomes[action.id] = _send_here(ctx, action, params, before_send, build)
                    continue
                if unexpected:
                    break  # as when sending one at a time: nothing more is sent (raised below)
                # The slot first, then the last check: the message leaves once it is
                # built (pipelined: its envelope does; its content follows the next).
                pool.reserve()
                try:
                    message = _checked_message(action, params, before_send, build)
                except BaseException:
                    pool.cancel()
                    raise
                if isinstance(message, Outcome):
                    pool.cancel()
                    outcomes[action.id] = message
                    continue
                future = pool.submit(message)
                future.add_done_callback(_note_unexpected(unexpected))
                in_flight.append((action, future))
        except BaseException:
            senders.finish()
            wait([future for _, future in in_flight])  # never leave a send running unseen
            raise
        senders.finish()
        outcomes.update(_outcomes_of(in_flight))
    return outcomes


class _Senders:
    """The channel set's sending pools of one `send_each` call, by channel name (None
    for a channel sent by `send` on the calling thread). While a pool of worker
    threads is used, the GIL is handed over quickly (parallel.quick_switching)."""

    def __init__(self, channels):
        self.parallel_of = getattr(channels, "parallel", None)
        self.found: dict[str, ParallelSends | None] = {}
        self.switching = False
        self.stack = ExitStack()

    def of(self, name: str) -> ParallelSends | None:
        if name not in self.found:
            pool = self.parallel_of(name) if self.parallel_of is not None else None
            if pool is not None and getattr(pool, "threaded", True) and not self.switching:
                self.stack.enter_context(quick_switching())
                self.switching = True
            self.found[name] = pool
        return self.found[name]

    def finish(self) -> None:
        """Let every pool used read what it still owes (a pipeline's last replies):
        after this, every future it returned is resolved or will be by a worker."""
        for pool in self.found.values():
            if pool is not None:
                pool.finish()

    def __enter__(self) -> _Senders:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stack.close()


def _checked_message(action, params, before_send, build) -> Any | Outcome:
    if before_send is not None and not before_send(action):
        return NOT_SENT
    return build(action, params)


def _send_here(ctx, action, params, before_send, build) -> Outcome:
    """Check, build and send one message on this thread."""
    message = _checked_message(action, params, before_send, build)
    if isinstance(message, Outcome):
        return message
    try:
        ctx.channels.get(action.channel).send(message)
    except DeliveryFailure as exc:
        return outcome_of_failure(exc)
    return Outcome.sent()


def _note_unexpected(errors: list[BaseException]) -> Callable[[Future], None]:
    def note(future: Future) -> None:
        error = future.exception()
        if error is not None and not isinstance(error, DeliveryFailure):
            errors.append(error)

    return note


def _outcomes_of(in_flight: list[tuple[PlannedAction, Future]]) -> dict[int, Outcome]:
    """Wait for every send in flight; an unexpected error (a bug, not a delivery
    failure) is raised once all have finished, as a send on this thread raises it."""
    outcomes: dict[int, Outcome] = {}
    unexpected: BaseException | None = None
    for action, future in in_flight:
        error = future.exception()
        if error is None:
            outcomes[action.id] = Outcome.sent()
        elif isinstance(error, DeliveryFailure):
            outcomes[action.id] = outcome_of_failure(error)
        elif unexpected is None:
            unexpected = error
    if unexpected is not None:
        raise unexpected
    return outcomes


def in_order(actions: Sequence[PlannedAction], *parts: dict[int, Outcome]) -> list[Outcome]:
    merged: dict[int, Outcome] = {}
    for part in parts:
        merged.update(part)
    return [merged[a.id] for a in actions]


def base_event(ctx: DeliveryContext, action: PlannedAction, event_type: str) -> dict[str, Any]:
    """The Standard Webhooks envelope {type, timestamp, data} shared by SMS and webhooks."""
    return {
        "type": event_type,
        "timestamp": ctx.now.isoformat(),
        "data": {
            "idempotency_key": action.idempotency_key,
            "rule_id": action.rule_id,
            "user_id": action.user_id,
            "variant": action.variant,
        },
    }
