"""Regenerate migration 0001 from the models (only while no release has shipped).

Run: .venv/bin/python scripts/regenerate_initial_migration.py
Once a release ships, new schema changes get new revisions instead.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from engine.config import Settings
from engine.store import Store
from engine.store.database import create_engine_for
from engine.store.migrations import HERE, alembic_config

target = HERE / "versions" / "0001_initial_schema.py"
target.unlink(missing_ok=True)
with tempfile.TemporaryDirectory() as folder:
    store = Store(create_engine_for(f"sqlite:///{Path(folder) / 'm.db'}"), Settings())
    command.revision(
        alembic_config(store), message="initial schema", autogenerate=True, rev_id="0001"
    )
    store.dispose()
text = target.read_text().replace("astext_type=Text()", "astext_type=sa.Text()")
target.write_text("\n".join(line.rstrip() for line in text.splitlines()) + "\n")
# Keep the generated file within the project's lint and format rules.
ruff = Path(sys.executable).with_name("ruff")
subprocess.run([str(ruff), "format", "-q", str(target)], check=True)
subprocess.run([str(ruff), "check", "--fix", "-q", str(target)], check=True)
