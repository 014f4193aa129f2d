"""Safety: sandbox escapes refused, limits, strict variables, path traversal, abort()."""

from __future__ import annotations

import pytest
from creative_helpers import context, project, write

from engine.creatives import (
    InvalidCreativeNameError,
    RenderedSurface,
    Skipped,
    TemplateProblemError,
    render_creative,
)
from engine.creatives.checks import check_creatives
from engine.creatives.environment import CreativeLoader, get_environment
from engine.errors import Location


@pytest.fixture
def settings(tmp_path):
    return project(tmp_path / "shop", templates=False)


def render_sms(settings, source: str):
    write(settings, "probe/sms.en.txt", source)
    return render_creative(settings, "probe", "sms", context(settings))


@pytest.mark.parametrize(
    "source",
    [
        "{{ '{0.__class__}'|attr('format')(offer) }}",
        "{{ '{0.__class__.__mro__}'|attr('format')(1) }}",
        "{{ '{x.__class__}'.format_map({'x': offer}) }}",
        "{{ '{x.__class__.__mro__}'|attr('format_map')({'x': offer}) }}",
        "{{ ().__class__.__base__.__subclasses__() }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ offer.__init__.__globals__ }}",
        "{{ range.__init__.__globals__['os'] }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_known_sandbox_escapes_are_refused(settings, source):
    with pytest.raises(TemplateProblemError) as caught:
        render_sms(settings, source)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.location.path == "templates/probe/sms.en.txt"
    assert diagnostic.location.line == 1
    assert "unsafe" in diagnostic.message or "undefined" in diagnostic.message


def test_huge_range_is_refused(settings):
    with pytest.raises(TemplateProblemError) as caught:
        render_sms(settings, "{% for i in range(10**9) %}x{% endfor %}")
    assert caught.value.diagnostics[0].message == (
        "render limit exceeded: range() of 1000000000 items exceeds the limit of 1000"
    )


def test_huge_exponent_and_string_repetition_are_refused(settings):
    with pytest.raises(TemplateProblemError, match="exponent 1000 exceeds the limit of 64"):
        render_sms(settings, "{{ 10**1000 }}")
    with pytest.raises(TemplateProblemError, match="repeating a sequence 1000000000 times"):
        render_sms(settings, "{{ 'x' * 1000000000 }}")


def test_output_size_is_limited(settings):
    source = (
        "{% for i in range(1000) %}{% for j in range(1000) %}xxxxxxxxxx{% endfor %}{% endfor %}"
    )
    with pytest.raises(TemplateProblemError, match="output exceeds 200000 characters"):
        render_sms(settings, source)


def test_context_cannot_be_mutated(settings):
    with pytest.raises(TemplateProblemError, match="unsafe operation"):
        render_sms(settings, "{{ offer.update({'value': 0}) }}")


def test_misspelt_variable_fails_at_check_with_file_and_line(settings):
    write(settings, "probe/sms.en.txt", "Hello\n{{ user.frist_name }}, {{ offer.code }}\n")
    write(settings, "probe/landing.en.html", "<p>{{ offer.code }}</p>")
    diagnostics = check_creatives(settings, [])
    assert [d.render() for d in diagnostics] == [
        "templates/probe/sms.en.txt:2: error: undefined variable: "
        "'dict object' has no attribute 'frist_name' (did you mean 'first_name'?)"
    ]


def test_syntax_error_names_file_and_line(settings):
    write(settings, "probe/sms.en.txt", "ok\n{% if offer.code %}\nno endif\n")
    with pytest.raises(TemplateProblemError) as caught:
        render_creative(settings, "probe", "sms", context(settings))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.location.path == "templates/probe/sms.en.txt"
    assert diagnostic.location.line == 3
    assert diagnostic.message.startswith("template syntax error: Unexpected end of template.")


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", "_shared", "Winback", "", "a b", "x\x00"])
def test_creative_names_that_could_escape_are_refused(settings, name):
    with pytest.raises(InvalidCreativeNameError):
        render_creative(settings, name, "sms", context(settings))


@pytest.mark.parametrize(
    "template", ["../nudge.toml", "probe/../../nudge.toml", "probe/..", "/etc/passwd", "a/b/c"]
)
def test_loader_refuses_traversal(settings, template):
    loader = CreativeLoader(settings.templates_dir)
    with pytest.raises(InvalidCreativeNameError):
        loader.get_source(get_environment(settings.templates_dir.resolve()), template)


def test_symlink_out_of_the_templates_folder_is_not_followed(settings, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret", encoding="utf-8")
    write(settings, "probe/landing.en.html", "x")
    (settings.templates_dir / "probe" / "sms.en.txt").symlink_to(secret)
    with pytest.raises(Exception, match="sms.en.txt"):
        render_creative(settings, "probe", "sms", context(settings))


def test_include_outside_the_folder_is_refused(settings):
    with pytest.raises(InvalidCreativeNameError):
        render_sms(settings, "{% include '../../nudge.toml' %}")


def test_abort_skips_the_message_with_the_reason(settings):
    source = "{% if not user.first_name %}{{ abort('no name to greet') }}{% endif %}Hi"
    write(settings, "probe/sms.en.txt", source)
    skipped = render_creative(settings, "probe", "sms", context(settings, name=None))
    assert skipped == Skipped(
        creative="probe",
        surface="sms",
        reason="no name to greet",
        location=Location("templates/probe/sms.en.txt", 1),
    )
    sent = render_creative(settings, "probe", "sms", context(settings))
    assert isinstance(sent, RenderedSurface) and sent.text == "Hi"


def test_autoescape_only_for_html(settings):
    write(settings, "probe/sms.en.txt", "{{ user.name }}")
    write(settings, "probe/landing.en.html", "<p>{{ user.name }}</p>")
    ctx = context(settings, name="<b>Tom & Jerry</b>")
    assert render_creative(settings, "probe", "sms", ctx).text == "<b>Tom & Jerry</b>"
    html = render_creative(settings, "probe", "landing", ctx).text
    assert html == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>\n"


def test_unrendered_template_syntax_in_output_is_an_error(settings):
    write(settings, "probe/sms.en.txt", "{{ '{{ offer.code }}' }}")
    with pytest.raises(TemplateProblemError) as caught:
        render_creative(settings, "probe", "sms", context(settings))
    assert caught.value.diagnostics[0].render() == (
        "templates/probe/sms.en.txt: error: sms: unrendered '{{' in the output "
        "(escaped or nested template syntax?)"
    )


def test_a_live_template_edit_that_does_not_compile_keeps_the_last_good_version(settings, caplog):
    """Hot reload in a running daemon: a typo saved to a template must not kill sends."""
    import os

    path = write(settings, "probe/sms.en.txt", "Hello {{ user.name }}")
    assert render_creative(settings, "probe", "sms", context(settings)).text == "Hello Alex Morgan"

    path.write_text("Hello {{ user.name ", encoding="utf-8")
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    with caplog.at_level("WARNING", logger="nudge.creatives"):
        kept = render_creative(settings, "probe", "sms", context(settings))
    assert kept.text == "Hello Alex Morgan"
    assert "keeping its last good version" in caplog.text and "sms.en.txt:1" in caplog.text

    path.write_text("Hi {{ user.name }}", encoding="utf-8")
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 10))
    assert render_creative(settings, "probe", "sms", context(settings)).text == "Hi Alex Morgan"


def test_html_surfaces_escape_what_the_shared_blocks_return(tmp_path):
    """The shared blocks are plain text (blocks.<locale>.jinja): an HTML surface escapes
    what they print, shopper data included, as it escapes a variable. (Jinja itself
    would mark a macro's output safe when an autoescaping template calls it, so a
    name like `<b>x</b>` would reach the HTML as markup.) A macro written in an HTML
    template is HTML already and is not escaped twice."""
    settings = project(tmp_path / "shop")
    write(
        settings,
        "probe/landing.en.html",
        "{% macro bold(text) %}<b>{{ text }}</b>{% endmacro %}"
        "<p>{{ blocks.greeting() }} {{ blocks.unsubscribe_question() }}</p>{{ bold(user.name) }}",
    )
    ctx = context(settings, name="<i>Tom</i>")
    assert ctx["user"]["first_name"] == "<i>Tom</i>"
    assert render_creative(settings, "probe", "landing", ctx).text == (
        "<p>Hi &lt;i&gt;Tom&lt;/i&gt;, Don&#39;t want these emails?</p>"
        "<b>&lt;i&gt;Tom&lt;/i&gt;</b>\n"
    )
