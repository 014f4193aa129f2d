"""The charts of the HTML report, drawn by matplotlib and returned as inline SVG.

Every chart is a matplotlib `Figure` saved with the SVG backend and made fit to sit
inside an HTML page:

- `svg.fonttype = "none"`: text stays text, so the browser draws it in the page's own
  fonts (CJK included) and it can be selected and searched;
- the XML prolog, the DOCTYPE and the metadata block are dropped, and the root element
  loses its fixed width and height (CSS scales it by its viewBox);
- the ids matplotlib writes are made unique on the page: ids nothing refers to are
  dropped, the others (clip paths, markers) get the chart's own prefix;
- mathtext is off (`text.parse_math`): a `$` in a rule or variant name is a dollar sign.

Names and labels come from rules and data; matplotlib escapes text and attributes, so
the SVG can be inserted into the page as it is. Numbers are formatted by the callables
the caller passes (Babel, in the shop's locale), the same as in the page's tables.
"""

from __future__ import annotations

import functools
import io
import re
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

Format = Callable[[float], str]

# Figures are about as wide, in points, as a phone screen is in CSS pixels, so that
# scaled to the page their 9-point text reads as ~9-10 px on a phone.
WIDTH = 4.2  # inches (302 points)
BLUE, ORANGE, GREY, GREEN = "#0969da", "#bc4c00", "#8c959f", "#1a7f37"
STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "nudge-report",  # the same data give the same SVG
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#57606a",
    "axes.labelcolor": "#24292f",
    "xtick.color": "#57606a",
    "ytick.color": "#57606a",
    "legend.frameon": False,
    "figure.facecolor": "white",
}


@dataclass(frozen=True)
class Interval:
    """One row of a lift chart: a difference with its two intervals."""

    label: str
    estimate: float
    fixed: tuple[float, float]
    always_valid: tuple[float, float]


def _styled(draw: Callable[..., str]) -> Callable[..., str]:
    """Runs a chart function inside the report's style: artists read rcParams when made."""

    @functools.wraps(draw)
    def styled(*args, **kwargs) -> str:
        with rc_context(STYLE), warnings.catch_warnings():
            # Text is drawn by the browser; matplotlib only measures it for the layout,
            # with DejaVu Sans, which has no CJK glyphs: not a problem for the page.
            warnings.filterwarnings(
                "ignore", message=r"Glyph \d+ .* missing from", category=UserWarning
            )
            return draw(*args, **kwargs)

    return styled


@_styled
def funnel(steps: Sequence[tuple[str, int]], number: Format, share: Format, key: str) -> str:
    """Horizontal bars, first step on top, each labelled `count (share of the first)`."""
    labels = [label for label, _ in steps]
    counts = [count for _, count in steps]
    first = counts[0] if counts else 0
    fig = _figure(0.45 + 0.38 * len(steps))
    ax = fig.subplots()
    positions = range(len(steps))
    ax.barh(positions, counts, color=[BLUE, "#54aeff", GREEN, ORANGE][: len(steps)], height=0.62)
    ax.set_yticks(list(positions), labels=labels)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(counts, default=0), 1) * 1.35)
    ax.xaxis.set_visible(False)
    ax.spines["bottom"].set_visible(False)
    for index, count in enumerate(counts):
        text = number(count)
        if first and index:
            text += f" ({share(count / first)})"
        ax.annotate(text, (count, index), xytext=(4, 0), textcoords="offset points", va="center")
    return _svg(fig, key, "Funnel: " + ", ".join(f"{label} {number(c)}" for label, c in steps))


@_styled
def lift(rows: Sequence[Interval], axis: Format, level: str, key: str) -> str:
    """Each difference as a dot with two error bars: fixed horizon and always valid."""
    fig = _figure(0.75 + 0.55 * len(rows))
    ax = fig.subplots()
    offset = 0.16
    handles = []
    for index, row in enumerate(rows):
        for shift, (low, high), color, marker in (
            (-offset, row.fixed, BLUE, "o"),
            (offset, row.always_valid, ORANGE, "s"),
        ):
            drawn = ax.errorbar(
                [row.estimate],
                [index + shift],
                xerr=[[row.estimate - low], [high - row.estimate]],
                fmt=marker,
                color=color,
                markersize=4,
                capsize=3,
                linewidth=1.4,
            )
            if index == 0:
                handles.append(drawn)
    ax.axvline(0, color=GREY, linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(rows)), labels=[_wrap(row.label, 18) for row in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: axis(value)))
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(axis="x", color="#eaeef2", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.legend(
        handles=handles,
        labels=[f"fixed horizon {level} CI", f"always valid {level} CI"],
        loc="upper center",
        bbox_to_anchor=(0.45, -0.12 if len(rows) > 1 else -0.25),
        ncols=2,
        fontsize=8,
    )
    described = "; ".join(
        f"{row.label}: {axis(row.estimate)}, fixed {axis(row.fixed[0])} to {axis(row.fixed[1])}, "
        f"always valid {axis(row.always_valid[0])} to {axis(row.always_valid[1])}"
        for row in rows
    )
    return _svg(fig, key, f"Lift with {level} intervals: {described}")


@_styled
def groups(
    names: Sequence[str],
    rates: Sequence[float | None],
    per_recipient: Sequence[float | None],
    rate: Format,
    money: Format,
    key: str,
) -> str:
    """The groups side by side: conversion rate and revenue per recipient, two panels."""
    fig = _figure(2.3)
    left, right = fig.subplots(1, 2)
    colors = [GREY if name == "control" else BLUE for name in names]
    labels = [_wrap(name, 10) for name in names]
    for ax, values, formatter, title in (
        (left, rates, rate, "conversion rate"),
        (right, per_recipient, money, "revenue per recipient"),
    ):
        shown = [0.0 if value is None else value for value in values]
        bars = ax.bar(range(len(names)), shown, color=colors, width=0.6)
        ax.set_xticks(range(len(names)), labels=labels, fontsize=8)
        ax.set_title(title)
        ax.yaxis.set_visible(False)
        ax.spines["left"].set_visible(False)
        ax.set_ylim(0, max(max(shown, default=0), 1e-9) * 1.25)
        ax.bar_label(
            bars, labels=["-" if v is None else formatter(v) for v in values], fontsize=8, padding=2
        )
    described = ", ".join(
        f"{name} {'-' if r is None else rate(r)} / {'-' if m is None else money(m)}"
        for name, r, m in zip(names, rates, per_recipient, strict=True)
    )
    return _svg(fig, key, f"Conversion rate and revenue per recipient: {described}")


@_styled
def retention(
    cohorts: Sequence[str], table: Sequence[Sequence[float | None]], rate: Format, key: str
) -> str:
    """The cohort retention heatmap: one row per cohort, one column per month since."""
    width = max((len(row) for row in table), default=1)
    values = np.full((len(cohorts), width), np.nan)
    for i, row in enumerate(table):
        for j, value in enumerate(row):
            if value is not None:
                values[i, j] = value
    fig = _figure(0.9 + 0.32 * len(cohorts))
    ax = fig.subplots()
    mesh = ax.pcolormesh(
        np.ma.masked_invalid(values), cmap="Blues", vmin=0, vmax=1, edgecolors="white"
    )
    mesh.set_linewidth(1)
    ax.set_xticks([j + 0.5 for j in range(width)], labels=[f"M{j}" for j in range(width)])
    ax.set_yticks([i + 0.5 for i in range(len(cohorts))], labels=list(cohorts))
    ax.invert_yaxis()
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if width <= 12:
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                ax.text(
                    j + 0.5,
                    i + 0.5,
                    rate(value),
                    ha="center",
                    va="center",
                    fontsize=7 if width > 6 else 8,
                    color="white" if value > 0.55 else "#24292f",
                )
    return _svg(fig, key, f"Retention by cohort, {len(cohorts)} cohorts over {width} months")


@_styled
def trends(
    labels: Sequence[str],
    gmv: Sequence[float],
    orders: Sequence[int],
    money: Format,
    number: Format,
    key: str,
) -> str:
    """GMV (bars) and orders (bars) per bucket, one panel each, sharing the axis."""
    fig = _figure(3.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    positions = list(range(len(labels)))
    top.bar(positions, gmv, color=BLUE, width=0.7)
    top.set_title("GMV (purchases - refunds)")
    top.yaxis.set_major_formatter(FuncFormatter(lambda value, _: money(value)))
    bottom.bar(positions, orders, color=GREEN, width=0.7)
    bottom.set_title("orders")
    bottom.yaxis.set_major_locator(MaxNLocator(4, integer=True))
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda value, _: number(value)))
    for ax in (top, bottom):
        ax.grid(axis="y", color="#eaeef2", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.yaxis.set_major_locator(MaxNLocator(4, integer=ax is bottom))
    step = max(1, -(-len(labels) // 8))  # at most 8 labels under the bars
    bottom.set_xticks(positions[::step], labels=list(labels)[::step], fontsize=8)
    if len(labels) > 4:
        for tick in bottom.get_xticklabels():
            tick.set_rotation(35)
            tick.set_horizontalalignment("right")
    described = ", ".join(
        f"{label}: {money(g)}, {number(o)} orders"
        for label, g, o in zip(labels, gmv, orders, strict=True)
    )
    return _svg(fig, key, f"GMV and orders over time: {described}")


# ---------------------------------------------------------------- SVG


def _figure(height: float) -> Figure:
    return Figure(figsize=(WIDTH, height), layout="constrained")


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) or text


_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_TAG = re.compile(r"<[^<>]+>")
_ID = re.compile(r'\sid="([^"]*)"')
_REFERENCE = re.compile(r'url\(#([^)]+)\)|href="#([^"]+)"')
_ROOT = re.compile(r"<svg\b[^>]*>")
_SIZE = re.compile(r'\s(?:width|height)="[^"]*"')


def _svg(fig: Figure, key: str, label: str) -> str:
    """The figure as an `<svg>` element to inline in HTML (see the module docstring)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = _METADATA.sub("", _PROLOG.sub("", buffer.getvalue(), count=1), count=1)
    referenced = {a or b for a, b in _REFERENCE.findall(text)}
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", key)

    def ids(match: re.Match[str]) -> str:
        value = match.group(1)
        return f' id="{prefix}-{value}"' if value in referenced else ""

    def tag(match: re.Match[str]) -> str:
        found = _ID.sub(ids, match.group(0))
        found = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", found)
        return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}-{m.group(1)}"', found)

    text = _TAG.sub(tag, text)
    root = _ROOT.search(text)
    assert root is not None, "matplotlib wrote no <svg> element"
    opening = _SIZE.sub("", root.group(0))
    opening = opening[:-1] + f' role="img" aria-label="{escape(label, quote=True)}">'
    return (text[: root.start()] + opening + text[root.end() :]).strip()
