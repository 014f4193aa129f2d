"""nudge.toml + environment: found like git, overridden by NUDGE_*, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from engine.config import find_project_dir, load_settings
from engine.errors import ConfigError


def write(folder: Path, text: str) -> Path:
    path = folder / "nudge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_found_by_walking_up_and_sqlite_path_is_relative_to_the_project(tmp_path):
    write(
        tmp_path, '[shop]\ntimezone = "Europe/Paris"\n[database]\nurl = "sqlite:///data/shop.db"\n'
    )
    nested = tmp_path / "rules" / "deep"
    nested.mkdir(parents=True)
    assert find_project_dir(nested) == tmp_path.resolve()
    settings = load_settings(find_project_dir(nested), environ={})
    assert settings.shop.timezone == "Europe/Paris"
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'data' / 'shop.db'}"


def test_default_database_is_a_file_in_the_project(tmp_path):
    write(tmp_path, "")
    settings = load_settings(tmp_path, environ={})
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'nudge.db'}"


def test_environment_overrides_the_file(tmp_path):
    write(tmp_path, '[shop]\ntimezone = "Europe/Paris"\n')
    settings = load_settings(
        tmp_path,
        environ={
            "NUDGE_DATABASE_URL": "postgresql+psycopg://shop@db/prod",
            "NUDGE_SHOP_TIMEZONE": "Asia/Tokyo",
            "NUDGE_LIFECYCLE_VIP_TIERS": "gold, platinum",
        },
    )
    assert settings.database_url == "postgresql+psycopg://shop@db/prod"
    assert settings.shop.timezone == "Asia/Tokyo"
    assert settings.lifecycle.vip_tiers == ("gold", "platinum")


def test_bad_values_name_the_file_line_and_key(tmp_path):
    path = write(
        tmp_path, '[shop]\nname = "x"\ntimezone = "Asia/Shangai"\n\n[lifecycle]\nlapsd_days = 9\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert str(caught.value) == (
        f"{path}:3: shop.timezone: unknown time zone 'Asia/Shangai' "
        "(did you mean 'Asia/Shanghai'?)\n"
        f"{path}:6: lifecycle.lapsd_days: unknown key (did you mean 'lapsed_days'?)"
    )


def test_bad_environment_value_names_the_variable(tmp_path):
    write(tmp_path, "")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={"NUDGE_LIFECYCLE_LAPSED_DAYS": "soon"})
    assert str(caught.value).startswith(
        "environment variable NUDGE_LIFECYCLE_LAPSED_DAYS: lifecycle.lapsed_days: "
    )


def test_cli_prints_config_errors_without_traceback(tmp_path, monkeypatch):
    write(tmp_path, '[shop]\ncurrency = "yuan"\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {tmp_path / 'nudge.toml'}:2: shop.currency: "
        "'yuan' is not an ISO 4217 currency code like 'CNY' or 'USD'\n"
    )


def test_a_folder_of_the_tz_database_is_an_unknown_time_zone(tmp_path):
    path = write(tmp_path, '[shop]\nname = "x"\ntimezone = "America"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert str(caught.value).startswith(f"{path}:3: shop.timezone: unknown time zone 'America'")
