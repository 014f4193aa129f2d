"""The `nudge` commands, one module per area; cli.py lists them in help order.

Each module only parses arguments, calls one engine function and prints through
engine/presentation: the CLI's layer sits on top of every other (docs/architecture.md).
"""
