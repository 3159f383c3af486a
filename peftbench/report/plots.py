"""Plots for the results report, drawn with matplotlib's Agg backend (no display needed).

Three figures, each with one panel per (model, task, training budget):

* ``score_vs_params``: score against trainable parameters (log scale) with the Pareto front of
  highest score and fewest parameters marked;
* ``score_vs_memory``: score against peak memory;
* ``throughput``: training throughput per method.

Every method keeps the same colour in every plot and every report (:func:`method_color`).
The pyplot state machine is not used, so drawing never changes the process-wide backend, and
matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from peftbench.report.cells import budget_label
from peftbench.report.groups import BUDGET_KEYS, floats

__all__ = ["METHOD_COLORS", "PLOT_TITLES", "method_color", "render_plots", "save_plots"]

METHOD_COLORS = {
    "full": "#404040",
    "lora": "#1f77b4",
    "houlsby": "#ff7f0e",
    "pfeiffer": "#2ca02c",
    "prefix": "#d62728",
    "ia3": "#9467bd",
    "adalora": "#8c564b",
    "dora": "#e377c2",
    "bitfit": "#bcbd22",
    "prompt": "#17becf",
    "loha": "#aec7e8",
    "lokr": "#ffbb78",
}
"""Fixed colours of the known methods."""

_EXTRA_COLORS = (
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
)

PLOT_TITLES = {
    "score_vs_params": "Score against trainable parameters (Pareto front marked)",
    "score_vs_memory": "Score against peak memory",
    "throughput": "Training throughput per method",
}
"""Titles of the figures, by name."""

MAX_PANELS = 12
_GIB = 1024**3
_MIB = 1024**2


def method_color(method: str) -> str:
    """Returns the colour of a method: fixed for known methods, derived from the name otherwise.

    Args:
        method: Method name, e.g. ``lora``.

    Returns:
        A hex colour string; the same name always gets the same colour.
    """
    key = method.strip().lower()
    if key in METHOD_COLORS:
        return METHOD_COLORS[key]
    return _EXTRA_COLORS[zlib.crc32(key.encode("utf-8")) % len(_EXTRA_COLORS)]


LEGEND_ENTRY_IN = 1.3
"""Inches one legend entry (marker and a method name) takes: the legend wraps into rows by it."""


def _wrapped(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (an average
    character is about 0.6 em wide in DejaVu Sans)."""
    chars = max(16, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars, break_on_hyphens=False, break_long_words=True)) or text


def _figure(title: str, panel_titles: list[str], legend_entries: int):
    """A figure of one panel per title (up to 3 a row) with the wrapped figure and panel titles on
    top and room for a legend of ``legend_entries`` at the bottom, wrapped into as many rows as the
    width needs: nothing is drawn outside the picture."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_panels = len(panel_titles)
    ncols = min(3, max(1, n_panels))
    nrows = math.ceil(max(1, n_panels) / ncols)
    width = 5.2 * ncols
    panel_width = width / ncols - 1.0
    heading = _wrapped(title, width - 0.3, 12)
    subtitles = [_wrapped(t, panel_width, 10) for t in panel_titles]
    title_lines = max([t.count("\n") + 1 for t in subtitles] or [1])
    legend_cols = max(1, min(max(legend_entries, 1), int(width // LEGEND_ENTRY_IN)))
    legend_rows = math.ceil(max(legend_entries, 1) / legend_cols)
    top_in = 0.25 + 0.22 * (heading.count("\n") + 1) + 0.17 * title_lines
    bottom_in = 0.85 + 0.28 * legend_rows
    height = 3.3 * nrows + top_in + bottom_in + 0.45 * (title_lines - 1) * (nrows - 1)
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins in inches (much faster than a layout engine on big grids): room for the titles
    # on top, tick labels and axis labels around each panel, and the legend at the bottom.
    fig.subplots_adjust(
        left=0.8 / width,
        right=1 - 0.2 / width,
        top=1 - top_in / height,
        bottom=bottom_in / height,
        wspace=0.32,
        hspace=0.38 + 0.12 * (title_lines - 1),
    )
    fig.suptitle(heading, y=1 - 0.1 / height, va="top")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    for ax, subtitle in zip(axes, subtitles, strict=False):
        ax.set_title(subtitle, fontsize=10)
    return fig, axes[:n_panels], legend_cols


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.canvas.print_png(buffer)
    return buffer.getvalue()


def _panels(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per model, task and training budget: settings of different budgets are not compared."""
    keys = [name for name in ("model", "task", *BUDGET_KEYS) if name in table.columns]
    panels = []
    for key, sub in table.groupby(keys, sort=True, dropna=False):
        model, task = key[0], key[1]
        metric = next((m for m in sub["metric"].tolist() if m), "score")
        title = f"{model or '-'} / {task or '-'} ({metric})"
        if len(key) == 4:
            budget = budget_label(key[2], key[3])
            title += f", {budget}" if budget != "?" else ""
        panels.append((title, sub))
    return panels[:MAX_PANELS]


def _methods(table: pd.DataFrame) -> list[str]:
    methods = sorted(set(table["method"].tolist()))
    return sorted(methods, key=lambda m: (m != "full", m))


def _legend(fig, methods: Iterable[str], ncols: int, extra: list | None = None) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], marker="o", linestyle="", color=method_color(m), label=m, markersize=7)
        for m in methods
    ]
    handles.extend(extra or [])
    fig.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=ncols,
        frameon=False,
    )


def _scatter_by_method(ax, sub: pd.DataFrame, x: np.ndarray) -> None:
    y = floats(sub["score_mean"])
    err = np.nan_to_num(floats(sub["score_std"]), nan=0.0)
    methods = sub["method"].to_numpy()
    for method in _methods(sub):
        mask = (methods == method) & np.isfinite(x) & np.isfinite(y)
        if mask.any():
            ax.errorbar(
                x[mask],
                y[mask],
                yerr=err[mask],
                fmt="o",
                color=method_color(method),
                ecolor=method_color(method),
                elinewidth=1,
                capsize=2,
                markersize=6,
                alpha=0.9,
            )


def plot_score_vs_params(table: pd.DataFrame) -> bytes:
    """Draws score against trainable parameters (log x) with the Pareto front; returns PNG bytes."""
    from matplotlib.lines import Line2D

    panels = _panels(table)
    fig, axes, legend_cols = _figure(PLOT_TITLES["score_vs_params"], [t for t, _ in panels], len(_methods(table)) + 1)
    for ax, (_, sub) in zip(axes, panels, strict=True):
        x = floats(sub["trainable_params"])
        _scatter_by_method(ax, sub, x)
        front = sub["pareto"].to_numpy(dtype=bool) & np.isfinite(x)
        if front.any():
            fx = x[front]
            fy = floats(sub["score_mean"])[front]
            order = np.argsort(fx, kind="mergesort")
            ax.plot(fx[order], fy[order], color="black", linestyle="--", linewidth=1, drawstyle="steps-post")
            ax.scatter(fx, fy, s=150, facecolors="none", edgecolors="black", linewidths=1.2, zorder=3)
        if np.isfinite(x).any() and (x[np.isfinite(x)] > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel("Trainable parameters (count, log scale)")
        ax.set_ylabel("Score (mean ± std over seeds)")
        ax.grid(True, which="major", alpha=0.3)
    front_handle = Line2D(
        [],
        [],
        color="black",
        linestyle="--",
        marker="o",
        markerfacecolor="none",
        markersize=10,
        label="Pareto front",
    )
    _legend(fig, _methods(table), legend_cols, [front_handle])
    return _png(fig)


def _memory_axis(kinds: set[str], peak: np.ndarray) -> tuple[float, str]:
    finite = peak[np.isfinite(peak)]
    unit, scale = ("GiB", _GIB) if finite.size and finite.max() >= _GIB else ("MiB", _MIB)
    if kinds == {"GPU"}:
        what = "Peak GPU memory allocated"
    elif kinds == {"RSS"}:
        what = "Peak process RSS"
    else:
        what = "Peak memory (GPU allocated where measured, else RSS)"
    return scale, f"{what} ({unit})"


def plot_score_vs_memory(table: pd.DataFrame) -> bytes:
    """Draws score against peak memory (GPU if measured, else RSS); returns PNG bytes."""
    panels = _panels(table)
    fig, axes, legend_cols = _figure(PLOT_TITLES["score_vs_memory"], [t for t, _ in panels], len(_methods(table)))
    for ax, (_, sub) in zip(axes, panels, strict=True):
        peak = floats(sub["peak_mem_bytes"])
        kinds = {k for k in sub["mem_kind"].tolist() if k}
        scale, label = _memory_axis(kinds, peak)
        _scatter_by_method(ax, sub, peak / scale)
        ax.set_xlabel(label)
        ax.set_ylabel("Score (mean ± std over seeds)")
        ax.grid(True, alpha=0.3)
    _legend(fig, _methods(table), legend_cols)
    return _png(fig)


def plot_throughput(table: pd.DataFrame) -> bytes:
    """Draws training throughput per method (median over settings, whiskers min-max); returns PNG."""
    tokens = floats(table["train_tokens_per_s"])
    use_tokens = bool(np.isfinite(tokens).any())
    column = "train_tokens_per_s" if use_tokens else "train_samples_per_s"
    unit = "tokens/s" if use_tokens else "samples/s"
    panels = _panels(table)
    heading = PLOT_TITLES["throughput"] + " (median over settings; whiskers: min to max)"
    fig, axes, legend_cols = _figure(heading, [t for t, _ in panels], len(_methods(table)))
    for ax, (_, sub) in zip(axes, panels, strict=True):
        values = floats(sub[column])
        methods = sub["method"].to_numpy()
        names, medians, lows, highs = [], [], [], []
        for method in _methods(sub):
            v = values[(methods == method) & np.isfinite(values)]
            if v.size:
                names.append(method)
                medians.append(float(np.median(v)))
                lows.append(float(np.median(v) - v.min()))
                highs.append(float(v.max() - np.median(v)))
        positions = np.arange(len(names))
        ax.bar(
            positions,
            medians,
            color=[method_color(m) for m in names],
            yerr=[lows, highs] if names else None,
            capsize=3,
            edgecolor="black",
            linewidth=0.5,
            width=0.6,
        )
        ax.set_xlim(-0.8, max(len(names) - 0.2, 1.8))
        ax.set_xticks(positions, names, rotation=30 if len(names) > 4 else 0)
        ax.set_xlabel("Method")
        ax.set_ylabel(f"Training throughput ({unit})")
        ax.grid(True, axis="y", alpha=0.3)
    _legend(fig, _methods(table), legend_cols)
    return _png(fig)


def render_plots(table: pd.DataFrame) -> dict[str, bytes]:
    """Draws all the report's plots.

    Args:
        table: A comparison table from :func:`peftbench.report.comparison_table`.

    Returns:
        PNG bytes by plot name (see :data:`PLOT_TITLES`); empty when there is nothing to plot.
        At most :data:`MAX_PANELS` (model, task, budget) panels are drawn per figure.
    """
    if table.empty:
        return {}
    return {
        "score_vs_params": plot_score_vs_params(table),
        "score_vs_memory": plot_score_vs_memory(table),
        "throughput": plot_throughput(table),
    }


def save_plots(plots: dict[str, bytes], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Writes plots from :func:`render_plots` as ``<out_dir>/<name>.png``.

    Args:
        plots: PNG bytes by name.
        out_dir: Directory to write into (created if needed).

    Returns:
        The paths written.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in plots.items():
        path = directory / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths
