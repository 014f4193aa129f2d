"""Lifecycle stages: definitions -> one SQL CASE; the stage as of T; stage history.

Every seen user is in exactly one stage at any instant T (docs/lifecycle.md). The
package, one job per module:

- `definitions`: the stages, their conditions and entry instants as SQL, the stage
  of every user as of T (`stage_case`, `stages_as_of`);
- `refresh`: records stage changes in stage_memberships (`refresh_stages`);
- `crossings`: which users time alone can have moved between two refreshes (a date
  crossing a threshold), and when the next such crossing is, both through indexes;
- `dirty`: the users whose data changed (the stage_dirty flags ingest sets);
- `marks`: up to which instant, and with which thresholds, stages were refreshed;
- `horizon`: lets a steady tick skip a refresh that provably records nothing;
- `history`: one user's recorded stays.
"""

from engine.lifecycle.definitions import (
    FUNNEL_ORDER,
    STAGES,
    add_days,
    current_stage_rows,
    stage_case,
    stages_as_of,
)
from engine.lifecycle.history import stage_history
from engine.lifecycle.horizon import stages_unchanged
from engine.lifecycle.refresh import StageRefresh, refresh_stages
from engine.lifecycle.tables import users_table

__all__ = [
    "FUNNEL_ORDER",
    "STAGES",
    "StageRefresh",
    "add_days",
    "current_stage_rows",
    "refresh_stages",
    "stage_case",
    "stage_history",
    "stages_as_of",
    "stages_unchanged",
    "users_table",
]
