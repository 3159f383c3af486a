"""Interactive plots for the HTML page, drawn with Plotly: hover shows each point's setting, seeds
and confidence interval. The page embeds plotly.js once, so it works offline; the static PNGs
(:mod:`~peftbench.report.plots`) stay for papers and Markdown.

Figures, one per model, task and training budget: score against trainable parameters (log x),
score against peak memory, training throughput per setting, and the training loss curves (mean
over the seeds of each setting, read from the runs' ``runs/<run_id>.json`` files).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peftbench.report.answers import label
from peftbench.report.cells import budget_label
from peftbench.report.groups import BUDGET_KEYS, floats
from peftbench.report.plots import method_color

PLOT_HEIGHT_PX = 440


def available() -> bool:
    """Whether Plotly is installed (``pip install plotly``); without it the page has the PNGs only."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True


def _panels(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    keys = [name for name in ("model", "task", *BUDGET_KEYS) if name in table.columns]
    out = []
    for key, sub in table.groupby(keys, sort=True, dropna=False):
        metric = next((m for m in sub["metric"].tolist() if m), "score")
        title = f"{key[0] or '-'} / {key[1] or '-'} ({metric})"
        if len(key) == 4 and budget_label(key[2], key[3]) != "?":
            title += f", {budget_label(key[2], key[3])}"
        out.append((title, sub))
    return out


def _hover(rec: dict) -> str:
    ci = (f"[{rec['score_ci_low']:.4f}, {rec['score_ci_high']:.4f}]"
          if not pd.isna(rec.get("score_ci_low")) and not pd.isna(rec.get("score_ci_high")) else "n/a")
    std = f" ± {rec['score_std']:.4f}" if not pd.isna(rec.get("score_std")) else ""
    return (f"<b>{rec['method']}</b> {rec['setting']}<br>score {rec['score_mean']:.4f}{std} "
            f"(seeds: {rec.get('seeds') or rec['n_seeds']})<br>95% CI {ci}<br>"
            f"trainable {int(rec['trainable_params']):,}")


def _layout(title: str, x_title: str, y_title: str, **axes: Any) -> dict[str, Any]:
    return dict(title=dict(text=title, x=0.01, font=dict(size=15)), height=PLOT_HEIGHT_PX, autosize=True,
                margin=dict(l=70, r=20, t=50, b=40), template="plotly_white",
                legend=dict(orientation="h", yanchor="top", y=-0.18, x=0, title=dict(text="method")),
                xaxis=dict(title=dict(text=x_title), automargin=True, **axes.get("xaxis", {})),
                yaxis=dict(title=dict(text=y_title), automargin=True, **axes.get("yaxis", {})))


def _scatter(sub: pd.DataFrame, x: np.ndarray, title: str, x_title: str, **axes: Any) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    records = sub.to_dict("records")
    for method in sorted(set(sub["method"]), key=lambda m: (m != "full", m)):
        rows = [(i, r) for i, r in enumerate(records) if r["method"] == method and math.isfinite(x[i])]
        if not rows:
            continue
        # The interval is clipped to the metric's range (stats.METRIC_RANGES), so its arms may differ.
        up = [(r["score_ci_high"] - r["score_mean"]) if not pd.isna(r.get("score_ci_high")) else 0 for _, r in rows]
        down = [(r["score_mean"] - r["score_ci_low"]) if not pd.isna(r.get("score_ci_low")) else 0 for _, r in rows]
        fig.add_trace(go.Scatter(
            x=[x[i] for i, _ in rows], y=[r["score_mean"] for _, r in rows], mode="markers", name=method,
            marker=dict(color=method_color(method), size=10, line=dict(width=1, color="white")),
            error_y=dict(type="data", array=up, arrayminus=down, symmetric=False, visible=True, thickness=1.2),
            hovertext=[_hover(r) for _, r in rows], hoverinfo="text"))
    fig.update_layout(**_layout(title, x_title, "score (mean, 95% CI)", **axes))
    return fig


def loss_curves(results_dir: Path, table: pd.DataFrame) -> dict[str, tuple[list[int], list[float], int]]:
    """``{setting_key: (steps, mean loss over seeds, seeds)}`` for the table's settings, from the
    successful runs' JSON files (steps every seed logged; a missing or unreadable file is skipped)."""
    wanted = set(table["setting_key"].astype("str")) - {""}
    path = results_dir / "runs.csv"
    if not wanted or not path.is_file():
        return {}
    curves: dict[str, list[dict[int, float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("status") != "success" or row.get("setting_key") not in wanted:
                continue
            try:
                detail = json.loads((results_dir / "runs" / f"{row['run_id']}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            points = {int(step): float(loss) for step, loss in detail.get("loss_curve") or []}
            if points:
                curves.setdefault(row["setting_key"], []).append(points)
    out = {}
    for key, seeds in curves.items():
        steps = sorted(set.intersection(*(set(s) for s in seeds)))
        out[key] = (steps, [float(np.mean([s[step] for s in seeds])) for step in steps], len(seeds))
    return out


def figures(table: pd.DataFrame, results_dir: Path | None = None) -> list[tuple[str, Any]]:
    """Every interactive figure as ``(id, plotly Figure)``, in page order."""
    import plotly.graph_objects as go

    out = []
    curves = loss_curves(results_dir, table) if results_dir is not None else {}
    for n, (title, sub) in enumerate(_panels(table)):
        params = floats(sub["trainable_params"])
        out.append((f"params-{n}", _scatter(sub, params, f"Score vs trainable parameters — {title}",
                                            "trainable parameters (log scale)", xaxis=dict(type="log"))))
        memory = floats(sub["peak_mem_bytes"]) / 2**30
        kinds = "/".join(sorted(set(sub["mem_kind"].astype("str")) - {""})) or "peak"
        out.append((f"memory-{n}", _scatter(sub, memory, f"Score vs peak memory — {title}", f"peak memory (GiB, {kinds})")))
        bars = go.Figure()
        for rec in sub.to_dict("records"):
            bars.add_trace(go.Bar(
                x=[label(rec)], y=[rec["train_tokens_per_s"]], name=rec["method"],
                marker_color=method_color(rec["method"]), showlegend=False, hoverinfo="text",
                hovertext=[f"<b>{rec['method']}</b> {rec['setting']}<br>{rec['train_tokens_per_s']:,.0f} tokens/s"]))
        bars.update_layout(**_layout(f"Training throughput — {title}", "setting", "tokens/s",
                                     xaxis=dict(tickangle=-30)))
        out.append((f"throughput-{n}", bars))
        lines = go.Figure()
        shown: set[str] = set()
        for rec in sub.to_dict("records"):
            if str(rec["setting_key"]) not in curves:
                continue
            steps, losses, seeds = curves[str(rec["setting_key"])]
            lines.add_trace(go.Scatter(
                x=steps, y=losses, mode="lines", name=rec["method"], legendgroup=rec["method"],
                showlegend=rec["method"] not in shown, line=dict(color=method_color(rec["method"]), width=2),
                hovertemplate=f"<b>{rec['method']}</b> {rec['setting']}<br>step %{{x}}: loss %{{y:.4f}}"
                              f"<br>mean of {seeds} seed(s)<extra></extra>"))
            shown.add(rec["method"])
        if shown:
            lines.update_layout(**_layout(f"Training loss (mean over seeds) — {title}", "optimizer step", "loss"))
            out.append((f"loss-{n}", lines))
    return out


def plotly_script() -> str:
    """plotly.js itself, to inline once in the page (about 4.8 MB): the page needs no network."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_div(name: str, fig: Any) -> str:
    """One figure as a ``<div>`` drawn by the inlined plotly.js, sized to its container."""
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"iplot-{name}",
                       config={"responsive": True, "displaylogo": False})
