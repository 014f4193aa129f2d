"""The read-only operator console of `nudge serve` (docs/console.md): `/console` (rules,
next fire times, last runs, daemons), `/console/outbox` (counts, retrying and dead
actions), `/console/users/<id>` (a user's events, decisions and `nudge explain`) and
`/console/report` (the measurement report), behind NUDGE_CONSOLE_TOKEN.

- access.py: the token (Basic or Bearer) and the rate limit;
- views.py: what each page shows, from the engine's own readers;
- render.py: the sandboxed Jinja templates (templates/) and local times;
- routes.py: the GET routes.
"""

from engine.serve.console.access import CONSOLE_BURST, CONSOLE_RATE, CONSOLE_TOKEN_ENV
from engine.serve.console.routes import console_routes

__all__ = ["CONSOLE_BURST", "CONSOLE_RATE", "CONSOLE_TOKEN_ENV", "console_routes"]
