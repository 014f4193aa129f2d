"""Real, tiny distributions for plugin tests: what `pip install` would leave on sys.path.

`install(site, name, version, files, entry_points)` writes the files and a
`<name>-<version>.dist-info` (METADATA, entry_points.txt, RECORD) into `site`, a folder
the test puts on sys.path, so `importlib.metadata` finds the distribution and its
entry points exactly as it finds an installed one, without a build or a venv.
"""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.action_kinds import ACTION_KINDS
from engine.delivery.channels import CHANNEL_FACTORIES
from engine.delivery.policy_kinds import POLICY_FACTORIES
from engine.triggers.registry import TRIGGER_KINDS

REGISTRIES = (ACTION_KINDS, TRIGGER_KINDS, CHANNEL_FACTORIES, POLICY_FACTORIES)


def install(site: Path, project: Path) -> Path:
    """Install the source tree `project` (a pyproject.toml and top-level modules) into
    `site`, as pip would for a pure-Python distribution; returns the .dist-info."""
    meta = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name, version = meta["name"], meta["version"]
    site.mkdir(parents=True, exist_ok=True)
    installed = []
    for module in sorted(project.glob("*.py")):
        (site / module.name).write_text(module.read_text(encoding="utf-8"), encoding="utf-8")
        installed.append(module.name)
    # The wheel spelling of the name: what pip writes (PEP 427 / PEP 503).
    dist_info = site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    dist_info.mkdir()
    requires = "".join(f"Requires-Dist: {req}\n" for req in meta.get("dependencies", ()))
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}", encoding="utf-8"
    )
    groups = meta.get("entry-points", {})
    (dist_info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in items.items()) + "\n"
            for group, items in groups.items()
        ),
        encoding="utf-8",
    )
    (dist_info / "INSTALLER").write_text("tests\n", encoding="utf-8")
    record = [*installed, *(f"{dist_info.name}/{f}" for f in ("METADATA", "entry_points.txt"))]
    (dist_info / "RECORD").write_text("".join(f"{path},,\n" for path in record), "utf-8")
    return dist_info


@contextmanager
def on_sys_path(site: Path, modules: tuple[str, ...] = ()) -> Iterator[None]:
    """`site` on sys.path with the registries re-read; afterwards, as it was before."""
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    for registry in REGISTRIES:
        registry.reload()
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for module in modules:
            sys.modules.pop(module, None)
        importlib.invalidate_caches()
        for registry in REGISTRIES:
            registry.reload()


def write_project(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


def files_in_docs(marker: str) -> dict[str, str]:
    """The files docs/plugins.md shows, each in the code block after `<!-- marker: NAME -->`."""
    text = DOCS.read_text(encoding="utf-8")
    pattern = rf"<!-- {re.escape(marker)}: (\S+) -->\n```\w*\n(.*?)```"
    return dict(re.findall(pattern, text, flags=re.S))


@contextmanager
def installed_from_docs(tmp_path: Path, marker: str, files: set[str]) -> Iterator[None]:
    """The distribution docs/plugins.md shows under `marker` (exactly `files`), built and
    installed onto a temporary sys.path entry for the duration."""
    shown = files_in_docs(marker)
    assert set(shown) == files, f"docs/plugins.md shows {sorted(shown)} under {marker!r}"
    name = tomllib.loads(shown["pyproject.toml"])["project"]["name"]
    install(tmp_path / "site", write_project(tmp_path / name, shown))
    modules = tuple(file.removesuffix(".py") for file in files if file.endswith(".py"))
    with on_sys_path(tmp_path / "site", modules=modules):
        yield
