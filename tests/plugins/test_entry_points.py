"""Kinds are entry points: Nudge's own come from its installed metadata, and a broken
plugin is an error naming its entry point, never an "unknown kind"."""

from __future__ import annotations

import tomllib
from importlib.metadata import distribution
from pathlib import Path

import pytest

from engine.action_kinds import ACTION_KINDS, get_action_kind
from engine.delivery.channels import build_channels
from engine.plugins import PluginError
from engine.triggers.registry import TRIGGER_KINDS
from tests.conftest import make_settings
from tests.plugins.distributions import install, on_sys_path, write_project

REPO = Path(__file__).resolve().parents[2]
GROUPS = ("nudge.actions", "nudge.triggers", "nudge.channels")


def test_the_installed_metadata_declares_what_pyproject_declares():
    """A stale editable install (pyproject changed, not re-installed) would silently miss
    a kind; `make test` re-installs when pyproject.toml is newer than its stamp."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    installed = distribution("nudge").entry_points
    for group in GROUPS:
        assert {ep.name: ep.value for ep in installed.select(group=group)} == dict(
            declared["entry-points"][group]
        ), group


def test_builtin_kinds_are_read_from_entry_points():
    assert sorted(ACTION_KINDS) == ["audience", "coupon", "email", "sms", "tag", "webhook"]
    assert sorted(TRIGGER_KINDS) == ["after", "event", "schedule", "stage"]
    assert {ACTION_KINDS.distribution(name) for name in ACTION_KINDS} == {"nudge"}


def _plugin(tmp_path, entry_point: str, module: str = "") -> Path:
    files = {
        "pyproject.toml": (
            '[project]\nname = "nudge-broken"\nversion = "0.1"\n'
            f'[project.entry-points."nudge.actions"]\n{entry_point}\n'
        )
    }
    if module:
        files["nudge_broken.py"] = module
    install(tmp_path / "site", write_project(tmp_path / "src", files))
    return tmp_path / "site"


def test_a_plugin_that_fails_to_import_is_named(tmp_path):
    site = _plugin(tmp_path, 'points = "nudge_broken:KIND"', "import no_such_dependency\n")
    with on_sys_path(site, modules=("nudge_broken",)), pytest.raises(PluginError) as error:
        get_action_kind("email")
    message = str(error.value)
    assert "failed to import" in message
    assert "'points' = 'nudge_broken:KIND'" in message
    assert "'nudge-broken'" in message
    assert "No module named 'no_such_dependency'" in message


@pytest.mark.parametrize(
    ("module", "complaint"),
    [
        ("KIND = {'name': 'points'}\n", "expected engine.actions.ActionKind"),
        (
            "from engine.actions.tag import KIND as TAG\n"
            "import dataclasses\nKIND = dataclasses.replace(TAG, name='pointz')\n",
            "the kind is named 'pointz', the entry point 'points'",
        ),
        (
            "from engine.actions.tag import KIND as TAG\n"
            "import dataclasses\nKIND = dataclasses.replace(TAG, name='points', params=dict)\n",
            "params must be a pydantic model",
        ),
    ],
)
def test_a_plugin_that_is_not_an_action_kind_is_named(tmp_path, module, complaint):
    site = _plugin(tmp_path, 'points = "nudge_broken:KIND"', module)
    with on_sys_path(site, modules=("nudge_broken",)), pytest.raises(PluginError) as error:
        list(ACTION_KINDS)
    assert "is not usable: entry point 'points'" in str(error.value)
    assert complaint in str(error.value)


def test_a_plugin_cannot_take_a_builtin_name(tmp_path):
    module = (
        "import dataclasses\nfrom engine.actions.tag import KIND as TAG\n"
        "KIND = dataclasses.replace(TAG, name='email')\n"
    )
    site = _plugin(tmp_path, 'email = "nudge_broken:KIND"', module)
    with on_sys_path(site, modules=("nudge_broken",)), pytest.raises(PluginError) as error:
        list(ACTION_KINDS)
    assert "action kind 'email' is registered twice" in str(error.value)
    assert "(distribution 'nudge')" in str(error.value)
    assert "(distribution 'nudge-broken')" in str(error.value)


def test_a_channel_factory_returning_no_channel_is_named(tmp_path, project_dir):
    files = {
        "pyproject.toml": (
            '[project]\nname = "nudge-odd"\nversion = "0.1"\n'
            '[project.entry-points."nudge.channels"]\nodd = "nudge_odd:factory"\n'
        ),
        "nudge_odd.py": "def factory(settings, config):\n    return 'not a channel'\n",
    }
    install(tmp_path / "site", write_project(tmp_path / "src", files))
    settings = make_settings(project_dir)
    with on_sys_path(tmp_path / "site", modules=("nudge_odd",)):
        with pytest.raises(PluginError, match="entry point 'odd'.*not a Channel"):
            build_channels(settings)
