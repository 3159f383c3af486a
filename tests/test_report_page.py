"""The HTML page of a six-method, two-seed sweep at 1280 px: interactive Plotly figures with hover
details, the loss curves as a mean over seeds, no sideways page scroll, every plot drawn (headless
Chromium)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from peftbench import report
from peftbench.record import RunRecord, append_csv_row, write_json
from peftbench.report.interactive import loss_curves
from tests.test_report_html import CHROMIUM_FLAGS, _chromium

pytest.importorskip("plotly")

METHODS = {"full": (22_700_000, 0.91, 2.2), "lora": (147_000, 0.90, 1.0), "houlsby": (895_000, 0.89, 1.05),
           "pfeiffer": (450_000, 0.885, 1.03), "prefix": (184_000, 0.86, 1.02), "ia3": (9_220, 0.84, 1.0)}


def write_sweep(results: Path) -> None:
    """Six methods x two seeds of one sweep, with their loss curves in runs/<run_id>.json."""
    for n, (method, (params, score, mem_gib)) in enumerate(METHODS.items()):
        for seed in (0, 1):
            record = RunRecord(
                run_id=f"r{n}s{seed}", sweep_id="sweep6", status="success", method=method,
                model="sentence-transformers/all-MiniLM-L6-v2", task="vader", seed=seed, lr=5e-4,
                method_settings=json.dumps({"rank": 8} if method == "lora" else {}), run_key=f"k{n}{seed}",
                setting_key=f"setting{n}", trainable_params=params, total_params=22_713_216,
                trainable_pct=100 * params / 22_713_216, peak_rss_bytes=int(mem_gib * 2**30),
                train_samples_per_s=100.0 + n, train_tokens_per_s=4000.0 + 300 * n, budget_unit="steps",
                budget=150, budget_steps=150, train_steps=150, score=score + 0.004 * seed, metric="accuracy",
                eval_on="eval", device="cpu", loss_curve=[(step, 0.7 - 0.002 * step * (1 + n / 10) + 0.01 * seed)
                                                          for step in range(10, 151, 10)])
            record.close()
            append_csv_row(results / "runs.csv", record.to_row())
            write_json(results / "runs" / f"{record.run_id}.json", record)


@pytest.fixture()
def sweep_page(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    write_sweep(results)
    out = tmp_path / "report.html"
    assert report.main([str(results), "--format", "html", "--output", str(out)]) == 0
    return out


def test_loss_curves_are_the_mean_over_seeds(tmp_path: Path) -> None:
    write_sweep(tmp_path)
    table = report.build_report(str(tmp_path)).table
    curves = loss_curves(tmp_path, table)
    steps, mean, seeds = curves["setting1"]  # lora
    assert seeds == 2 and steps == list(range(10, 151, 10))
    assert mean[0] == pytest.approx(0.7 - 0.002 * 10 * 1.1 + 0.005)


def test_the_page_has_interactive_figures_with_hover_details(sweep_page: Path) -> None:
    page = sweep_page.read_text(encoding="utf-8")
    assert "Interactive plots" in page and page.count('<div class="iplot">') == 4
    for name in ("params-0", "memory-0", "throughput-0", "loss-0"):
        assert f'id="iplot-{name}"' in page
    assert "(seeds: 0,1)" in page or "(seeds: 2)" in page  # hover names the seeds
    assert "95% CI [" in page and "mean of 2 seed(s)" in page
    assert "<script src=" not in page and "<img" in page  # plotly.js inlined (no download); the PNGs are kept


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_at_1280_px_the_page_does_not_scroll_sideways_and_every_plot_is_drawn(sweep_page: Path,
                                                                            tmp_path: Path) -> None:
    probe = tmp_path / "probe.html"
    measure = ("<script>window.addEventListener('load', () => setTimeout(() => { document.title = 'measured:' + "
               "JSON.stringify({page: document.documentElement.scrollWidth, view: window.innerWidth, "
               "drawn: [...document.querySelectorAll('div.iplot')].filter(d => d.querySelector('svg.main-svg') "
               "&& d.querySelectorAll('g.trace').length > 0).length, "
               "legends: [...document.querySelectorAll('div.iplot .legend .traces')].length, "
               "clipped: [...document.querySelectorAll('div.iplot')].filter(d => d.scrollWidth > d.clientWidth).length}); "
               "}, 500));</script>")
    probe.write_text(sweep_page.read_text(encoding="utf-8").replace("</body>", measure + "</body>"), encoding="utf-8")
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    done = subprocess.run([str(_chromium()), *flags, "--virtual-time-budget=20000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r"<title>measured:(.*?)</title>", done.stdout)
    assert found, done.stderr[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    assert measured["view"] == 1280 and measured["page"] <= 1280, measured  # no sideways page scroll
    assert measured["drawn"] == 4 and measured["clipped"] == 0, measured
    assert measured["legends"] >= 6 + 6 + 6, measured  # every method in the scatter and loss legends
    shot = tmp_path / "report-1280.png"
    subprocess.run([str(_chromium()), *flags, "--virtual-time-budget=20000", f"--screenshot={shot}",
                    sweep_page.as_uri()], capture_output=True, timeout=180, check=False)
    assert shot.exists() and shot.stat().st_size > 20_000


def test_static_plot_titles_and_a_long_legend_stay_inside_the_picture():
    """Seven legend entries and long model names on a one-panel figure (520 px wide): the legend
    wraps into rows and the titles into lines, and every one of them is drawn inside the PNG."""
    from peftbench.report.plots import _figure, _legend

    methods = ["full", "houlsby", "ia3", "lora", "pfeiffer", "prefix", "peft:fourierft"]
    fig, (ax,), cols = _figure("Training throughput per method (median over settings; whiskers: min to max)",
                               ["sentence-transformers/all-MiniLM-L6-v2 / vader (accuracy), 150 steps"], len(methods))
    _legend(fig, methods, cols)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    drawn = [*fig.legends, fig._suptitle, ax.title]
    for artist in drawn:
        extent = artist.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, artist
    assert cols < len(methods) and "\n" in ax.get_title()  # it had to wrap both
