"""The self-contained HTML page and the plots: content checks, and a real render in headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from peftbench import report
from peftbench.report.plots import METHOD_COLORS, method_color, render_plots
from tests.test_report_data import known_runs, write_runs

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


class _Page(HTMLParser):
    """Collects tables (as lists of cell texts), image sources and headings of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "table":
            self._table = values.get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(values.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture()
def page(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    write_runs(results, known_runs())
    out = tmp_path / "report.html"
    assert report.main([str(results), "--format", "html", "--output", str(out)]) == 0
    return out


def test_html_contains_table_rows_failed_runs_and_embedded_plots(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(text)
    comparison = parsed.tables["comparison"]
    assert comparison[0] == list(report.DISPLAY_HEADERS)
    assert len(comparison) == 1 + 6
    cells = {row[3] + " " + row[4]: row for row in comparison[1:]}
    score = comparison[0].index("Score (mean ± std)")
    assert cells["lora alpha=16 dropout=0 r=8 use_rslora=false lr=0.001"][score] == "0.8900 ± 0.0100"
    assert cells["full lr=2e-05"][score] == "0.9200 ± 0.0200"
    # Runs recorded without a budget take the 100 steps they trained as theirs.
    assert {row[comparison[0].index("Budget")] for row in comparison[1:]} == {"100 steps"}
    failed = parsed.tables["failed"]
    assert len(failed) == 1 + 2 and "CUDA out of memory" in failed[1][-1]
    assert "ddof=1" in text
    # Three <img> tags, each carrying a real PNG inline: the page needs no other file.
    assert len(parsed.images) == 3
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # No external file: the only references are data URIs (plotly.js is inlined, its source aside).
    assert "<script src=" not in text
    assert not re.search(r"""(src|href)=["'](?!data:)""", re.sub(r"<script>.*?</script>", "", text, flags=re.S))


def test_html_without_plots(tmp_path: Path, page: Path) -> None:
    out = tmp_path / "bare.html"
    assert report.main([str(page.parent / "results"), "--no-plots", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "<img" not in text and 'class="comparison"' in text


def test_plots_are_pngs_of_a_sensible_size(tmp_path: Path) -> None:
    write_runs(tmp_path, known_runs())
    plots = render_plots(report.comparison_table(report.load_runs(tmp_path)))
    assert set(plots) == {"score_vs_params", "score_vs_memory", "throughput"}
    for png in plots.values():
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert render_plots(report.comparison_table(report.load_runs(tmp_path)).iloc[0:0]) == {}


def test_method_colours_are_fixed_and_distinct() -> None:
    known = [method_color(m) for m in ("full", "lora", "houlsby", "pfeiffer", "prefix", "ia3")]
    assert len(set(known)) == len(known)
    assert method_color("lora") == METHOD_COLORS["lora"] == "#1f77b4"
    assert method_color("LoRA") == method_color("lora")
    assert method_color("my-new-method") == method_color("my-new-method")
    assert re.fullmatch(r"#[0-9a-f]{6}", method_color("my-new-method"))


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _count_colour(pixels: np.ndarray, hex_colour: str, tolerance: int = 12) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return int((np.abs(pixels - rgb).max(axis=2) <= tolerance).sum())


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_page_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "screenshot.png"
    done = subprocess.run(
        [
            str(_chromium()),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1500,6000",  # the interactive figures, then the PNGs
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = _pixels(shot)
    assert pixels.shape[:2] == (6000, 1500)
    non_white = (pixels < 240).any(axis=2)
    assert non_white.mean() > 0.02, "screenshot is (nearly) blank"
    assert pixels.std() > 20
    # Table: the header row's grey background fills a band near the top of the page.
    assert _count_colour(pixels[:400], "#f0f0f0", tolerance=2) > 5_000
    # Plots: the method colours (only used in the plots) are drawn, below the table.
    plot_area = pixels[400:]
    for method in ("lora", "ia3", "houlsby"):  # not "full": its dark grey also matches text
        assert _count_colour(plot_area, METHOD_COLORS[method]) > 200, method
