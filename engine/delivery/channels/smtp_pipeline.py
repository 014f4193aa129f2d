"""One SMTP connection kept busy while the dispatcher builds the next email.

Sent one at a time, an email costs its build *plus* four round trips (MAIL, RCPT, DATA,
the message), and the server's work on each reply is time the dispatcher spends
waiting. `SmtpPipeline` runs on the dispatcher's own thread (no hand-over of the GIL)
and never waits for a reply it does not need yet:

- the reply to a message's content is read only after the next message was built,
  so the server checks and stores one message while the dispatcher renders the next;
- when the server offers PIPELINING (RFC 2920; Postfix, Exim and the big providers
  do), the content of one message and the MAIL, RCPT and DATA of the next leave in one
  write, and their replies are read after the message after that was built: one
  exchange per email instead of four, overlapped with the build.

Each message still gets its own verdict, classified as SmtpChannel.send classifies
it (4xx transient, 5xx permanent, a lost connection transient for every message
whose final reply had not arrived). `finish()` reads every reply still owed: after it,
every future returned by `submit` is resolved. The bytes of each message are those
`sendmail` sends (the same dot-stuffing, end of data, SIZE parameter).

A kept-open connection is asked for a NOOP before it carries a pipeline (one round
trip per batch): one that the server closed while it was idle, or answers 421 (Postfix
and Exim say so before closing an idle connection), is replaced before anything is
written to it; once written to, a failure could only be retried, not re-sent at once
as `SmtpChannel.send` does. A 421 reply later (the server is closing the connection)
gives that message the server's reply and every later one still waiting a retry; the
next message opens a new connection.

One pipeline per `send_each` call (ChannelSet.parallel makes a new one each time), so
dispatchers on several threads sharing a channel each use a connection of their own.
"""

from __future__ import annotations

import re
import smtplib
from collections import deque
from concurrent.futures import Future
from functools import lru_cache
from typing import Any

from engine.delivery.channels import OutgoingEmail
from engine.delivery.channels.smtp import classify_reply, quit_quietly
from engine.delivery.context import PermanentDeliveryError, TransientDeliveryError

_LEADING_DOT = re.compile(rb"(?m)^\.")  # RFC 5321 4.5.2 dot-stuffing, as smtplib
_CRLF = b"\r\n"


class _Refused(Exception):
    """The server refused the connection itself (greeting, EHLO, STARTTLS, AUTH)."""

    def __init__(self, verdict: Exception):
        super().__init__(str(verdict))
        self.verdict = verdict


class _Message:
    """One email in the pipeline: its future, its envelope's replies as they arrive."""

    __slots__ = ("future", "wire", "refusal", "accepted", "sender_refused", "ready")

    def __init__(self, future: Future, wire: Any):
        self.future, self.wire = future, wire
        self.refusal: Exception | None = None  # the first refused step of its envelope
        self.accepted = 0  # recipients the server accepted
        self.sender_refused = False
        self.ready = False  # the server said 354 to its DATA: its content goes next

    def refuse(self, error: Exception) -> None:
        if self.refusal is None:
            self.refusal = error


class SmtpPipeline:
    """The pipelined sends of one SmtpChannel connection, on the caller's thread.

    Used by engine.actions.delivering.send_each like a channel's pool of workers
    (`reserve`, `submit`, `cancel`, `finish`), except that nothing runs elsewhere:
    `submit` writes what it can and returns; `finish` reads what is owed.
    """

    threaded = False  # sends on the caller's thread: no GIL switching to speed up

    def __init__(self, channel):
        self.channel = channel
        self._connection: smtplib.SMTP | None = None
        self._pipelining = self._size = False
        # Replies owed, in the order the server sends them: (message, step).
        self._owed: deque[tuple[_Message, str]] = deque()
        # The message whose envelope was written and whose content was not (yet).
        self._ahead: _Message | None = None

    def reserve(self) -> None:
        """Nothing to wait for: the one connection is this thread's."""

    def cancel(self) -> None:
        """Nothing was reserved."""

    def submit(self, message: OutgoingEmail) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        wire = message.wire
        if wire is None:  # a message only send_message can send: one at a time
            self.finish()
            self._send_alone(message, future)
            return future
        if not wire.recipients:
            future.set_exception(PermanentDeliveryError("email without a recipient"))
            return future
        try:  # the replies owed to the messages before: their verdicts
            if self._connection is not None:
                self._settle()
        except (OSError, smtplib.SMTPException) as exc:
            self._lost(exc)  # they are retried; this one goes on a new connection
        try:
            self._begin()
            self._start(_Message(future, wire))
        except _Refused as exc:  # the greeting, EHLO, STARTTLS or AUTH
            self._lost(exc, future, verdict=exc.verdict)
        except (OSError, smtplib.SMTPException) as exc:
            self._lost(exc, future)
        return future

    def _start(self, item: _Message) -> None:
        """Write what ends the message before (its content) and `item`'s envelope."""
        commands = self._envelope(item)
        if self._pipelining:  # that content and this envelope in one write
            ending = self._release_ahead()
            self._owe_envelope(item)
            self._write(ending + b"".join(commands))
            self._ahead = item
            return
        # One command at a time, stopping where smtplib's sendmail stops (a refused
        # sender, no recipient accepted); only the reply to the content waits.
        self._owe_envelope(item)
        for written, command in enumerate(commands, start=1):
            self._write(command)
            self._settle(leave=len(commands) - written)  # this command's reply
            if self._connection is None:  # the server closed it: the verdict is given
                return
            refused_sender = written == 1 and item.refusal is not None
            no_recipient = written == len(commands) - 1 and not item.accepted
            if refused_sender or no_recipient:
                for _ in range(len(commands) - written):
                    self._owed.pop()  # the commands not sent
                item.future.set_exception(item.refusal)  # (set: a reply refused it)
                break
        self._ahead = item
        self._write(self._release_ahead())

    def finish(self) -> None:
        """Read every reply still owed and send the content of the message built
        last: every submitted message has its verdict, the connection is idle."""
        if self._connection is None:
            return
        try:
            self._settle()
            if self._connection is not None:
                self._exchange(self._release_ahead())
        except (OSError, smtplib.SMTPException) as exc:
            self._lost(exc)
        except BaseException as exc:  # a bug: still, no future is left unresolved
            self._lost(exc)
            raise
        if self._connection is not None:
            self.channel.give_back(self._connection)
            self._connection = None

    # --- the connection ---------------------------------------------------------

    def _begin(self) -> None:
        """A connection to write on: this pipeline's, else a kept-open one that still
        answers, else a new one."""
        if self._connection is not None:
            return
        connection = self.channel.take_idle()
        if connection is not None and not _still_open(connection):
            quit_quietly(connection)
            connection = None
        try:
            if connection is None:
                connection = self.channel.connect()
            try:
                connection.ehlo_or_helo_if_needed()
            except BaseException:
                quit_quietly(connection)
                raise
        except smtplib.SMTPResponseException as exc:  # refused: the server's verdict
            raise _Refused(classify_reply(exc.smtp_code, exc.smtp_error)) from exc
        self._connection = connection
        self._pipelining = connection.has_extn("pipelining")
        self._size = connection.has_extn("size")

    def _write(self, data: bytes) -> None:
        if data:
            self._connection.send(data)

    def _exchange(self, data: bytes) -> None:
        """Write `data` and read the replies it is owed."""
        self._write(data)
        self._settle()

    def _settle(self, leave: int = 0) -> None:
        """Read the replies owed (all but the last `leave`, for commands not yet
        written), giving each message its verdict."""
        while len(self._owed) > leave:
            item, step = self._owed[0]
            code, text = self._connection.getreply()
            self._owed.popleft()
            self._read(item, step, code, text)
            if code == 421:  # closing: nothing after this will be answered
                self._lost(classify_reply(code, text))
                return

    def _lost(
        self, error: Exception, also: Future | None = None, *, verdict: Exception | None = None
    ) -> None:
        """The connection failed or is closing: every message without a verdict is
        retried later, or gets the refusal it had (a message whose final reply never
        came may have been delivered; its Message-ID, the outbox key, lets the
        receiver drop the second copy)."""
        failure = verdict or TransientDeliveryError(
            f"SMTP {self.channel.host}:{self.channel.port}: {error or 'connection lost'}"
        )
        waiting = [item for item, _step in self._owed]
        if self._ahead is not None:
            waiting.append(self._ahead)
        for item in waiting:
            if not item.future.done():
                item.future.set_exception(item.refusal or failure)
        if also is not None and not also.done():
            also.set_exception(failure)
        self._drop()

    def _drop(self) -> None:
        """Forget the connection and what it owed."""
        self._owed.clear()
        self._ahead = None
        quit_quietly(self._connection)
        self._connection = None

    # --- one message's steps ---------------------------------------------------

    def _envelope(self, item: _Message) -> list[bytes]:
        """MAIL, RCPT per recipient and DATA, as sendmail words them."""
        wire = item.wire
        size = f" size={len(wire.data)}" if self._size else ""
        commands = [f"mail FROM:{_quoted_sender(wire.sender)}{size}\r\n".encode("ascii")]
        # Plain addresses (WireEmail's recipients): quoteaddr would only add brackets.
        commands += [f"rcpt TO:<{address}>\r\n".encode("ascii") for address in wire.recipients]
        commands.append(b"data\r\n")
        return commands

    def _owe_envelope(self, item: _Message) -> None:
        """The replies to `item`'s envelope are owed next (write it next, in order)."""
        self._owed.append((item, "mail"))
        self._owed.extend((item, "rcpt") for _ in item.wire.recipients)
        self._owed.append((item, "data"))

    def _release_ahead(self) -> bytes:
        """What ends the message whose envelope is answered: its content (the server
        said 354), or RSET (it refused the envelope; the message has its verdict)."""
        item, self._ahead = self._ahead, None
        if item is None:
            return b""
        if item.ready:
            content = _content(item.wire.data)
            self._owed.append((item, "end"))
            return content
        self._owed.append((item, "rset"))
        return b"rset\r\n"

    def _read(self, item: _Message, step: str, code: int, text: bytes) -> None:
        if step == "mail":
            if code != 250:
                item.sender_refused = True
                item.refuse(classify_reply(code, text))
        elif step == "rcpt":
            if code in (250, 251):
                item.accepted += 1
            else:
                item.refuse(classify_reply(code, text))
        elif step == "data":
            if code == 354 and item.accepted and not item.sender_refused:
                item.ready = True  # its verdict comes with the reply to its content
                return
            if code == 354:
                # DATA taken with no recipient or after a refused MAIL (RFC 2920 says
                # a server must refuse it): an empty message ends the data.
                self._owed.appendleft((item, "rset"))
                self._write(b".\r\n")
            else:
                item.refuse(classify_reply(code, text))
            item.future.set_exception(item.refusal or classify_reply(code, text))
        elif step == "end":
            if code != 250:
                item.future.set_exception(classify_reply(code, text))
            elif item.refusal is not None:  # some recipients refused, the rest sent
                item.future.set_exception(item.refusal)
            else:
                item.future.set_result(None)
        # "rset": the reply to a reset after a refusal; its message has its verdict.

    def _send_alone(self, message: OutgoingEmail, future: Future) -> None:
        try:
            self.channel.send(message)
        except Exception as exc:  # a DeliveryFailure, or a bug raised by the caller
            future.set_exception(exc)
        else:
            future.set_result(None)


# The shop's sender, the same for every message: quoted as sendmail does, once.
_quoted_sender = lru_cache(maxsize=64)(smtplib.quoteaddr)


def _still_open(connection: smtplib.SMTP) -> bool:
    try:
        return connection.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False


def _content(data: bytes) -> bytes:
    """A message's DATA, as smtplib's data() sends it."""
    quoted = _LEADING_DOT.sub(b"..", data) if data[:1] == b"." or b"\n." in data else data
    if not quoted.endswith(_CRLF):
        quoted += _CRLF
    return quoted + b".\r\n"
