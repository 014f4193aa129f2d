"""The human output of the main commands, against snapshots (frozen clock, NO_COLOR).

Run with NUDGE_UPDATE_SNAPSHOTS=1 to rewrite snapshots/ after an intended change, and
read the diff. Durations and the daemon's row (id, host, pid) vary: they are replaced.
"""

from __future__ import annotations

import re

from cli_shop import matches_snapshot, run, shop_fixtures

shop, in_shop = shop_fixtures()

COMMANDS = {
    "stats": ("stats",),
    "users-show": ("users", "show", "u00001"),
    "dry-run": ("dry-run", "--at", "2026-12-20T10:00"),
    "status": ("status",),
    "dispatch": ("dispatch", "--once", "--at", "2026-11-21T10:00"),
    "report": ("report", "--until", "2026-11-27T10:00"),
}


def _stable(text: str) -> str:
    text = re.sub(r"\(\d+ ms\)", "(N ms)", text)
    # A daemon's row names its id, host and pid.
    text = re.sub(r"(?m)^daemon  .*\n.*$", "<daemons table>", text)
    return re.sub(r"(?m)^[0-9a-f]{8}  .*$", "<daemon id, host, pid, times, state>", text)


def test_human_output(in_shop):
    """In this order in one test: dispatch changes what status and report show."""
    for name, command in COMMANDS.items():
        result = run(*command)
        assert result.exit_code == 0, result.output
        assert "Traceback" not in result.output
        # Shop time, to the second: no UTC offsets and no microseconds.
        assert not re.search(r"\d\d:\d\d:\d\d\.\d+", result.stdout), name
        assert "+00:00" not in result.stdout, name
        matches_snapshot(name, _stable(result.stdout))
