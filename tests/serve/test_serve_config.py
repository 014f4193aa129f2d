"""`[serve]` in nudge.toml and its List-Unsubscribe default."""

from __future__ import annotations

import pytest
from conftest import make_settings

from engine.config import load_settings
from engine.delivery.config import delivery_config
from engine.errors import ConfigError


def test_defaults(project_dir):
    settings = make_settings(project_dir)
    assert (settings.serve.base_url, settings.serve.host, settings.serve.port) == (
        None,
        "127.0.0.1",
        8787,
    )
    assert delivery_config(settings).email.unsubscribe_url == (
        "https://shop.example.com/unsubscribe/{token}"
    )


def test_https_base_url_makes_the_unsubscribe_route_the_default(project_dir):
    settings = make_settings(project_dir, serve={"base_url": "https://go.example.com/"})
    assert settings.serve.base_url == "https://go.example.com"
    email = delivery_config(settings).email
    assert email.unsubscribe_url == "https://go.example.com/u/{token}"


def test_an_explicit_unsubscribe_url_wins(project_dir):
    (project_dir / "nudge.toml").write_text(
        '[serve]\nbase_url = "https://go.example.com"\n'
        '[delivery.email]\nunsubscribe_url = "https://shop.example.com/bye/{token}"\n'
        'from_address = "a@example.com"\n',
        encoding="utf-8",
    )
    settings = load_settings(project_dir, environ={})
    email = delivery_config(settings).email
    assert email.unsubscribe_url == "https://shop.example.com/bye/{token}"
    assert email.from_address == "a@example.com"


def test_a_plain_http_base_url_is_no_list_unsubscribe_url(project_dir):
    # RFC 8058 wants https; a local http server does not replace the configured URL.
    settings = make_settings(project_dir, serve={"base_url": "http://127.0.0.1:8787"})
    assert delivery_config(settings).email.unsubscribe_url.startswith("https://shop.")


def test_environment_overrides_and_the_secret_is_not_a_setting(project_dir):
    settings = load_settings(
        project_dir,
        environ={
            "NUDGE_SERVE_PORT": "9000",
            "NUDGE_SERVE_BASE_URL": "https://env.example.com",
            "NUDGE_SERVE_SECRET": "not-a-setting",
        },
    )
    assert settings.serve.port == 9000
    assert delivery_config(settings).email.unsubscribe_url == "https://env.example.com/u/{token}"
    assert "secret" not in settings.serve.model_dump()


def test_bad_values_name_the_key(project_dir):
    with pytest.raises(ConfigError, match="serve.base_url"):
        make_settings(project_dir, serve={"base_url": "go.example.com"})
    with pytest.raises(ConfigError, match="serve.secret"):
        make_settings(project_dir, serve={"secret": "in-a-file"})
