"""Nudge's own channels, as `nudge.channels` entry points (pyproject.toml).

A channel entry point loads a factory `factory(settings, config) -> Channel | None`:
it builds the channel nudge.toml configures, or returns None when it is not configured
(the channel is then absent, and an action sent to it goes dead naming it). These
three are always configured: the file backends need no server.
"""

from __future__ import annotations

from engine.delivery.channels import Channel


def email_channel(settings, config) -> Channel:
    """`[delivery.email]`: SMTP, or one .eml file per message (default)."""
    if config.email.backend == "smtp":
        from engine.delivery.channels.smtp import SmtpChannel

        return SmtpChannel.from_config(config.email)
    from engine.delivery.channels.file import FileEmailChannel

    return FileEmailChannel(settings.project_dir / config.email.folder)


def _json_channel(settings, section) -> Channel:
    if section.backend == "http":
        from engine.delivery.channels.http import HttpChannel

        return HttpChannel(timeout=section.timeout, concurrency=section.concurrency)
    from engine.delivery.channels.file import FileJsonChannel

    return FileJsonChannel(settings.project_dir / section.folder)


def sms_channel(settings, config) -> Channel:
    """`[delivery.sms]`: a JSON POST to the gateway, or one .json file per message."""
    return _json_channel(settings, config.sms)


def webhook_channel(settings, config) -> Channel:
    """`[delivery.webhook]`: signed JSON POSTs (default), or one .json file per message."""
    return _json_channel(settings, config.webhook)
