"""The default text report fits 120 columns with the key columns; --wide keeps every column; the
Setting column shows only what differs from the method's defaults; prose wraps at the terminal width."""

from __future__ import annotations

from pathlib import Path

from peftbench.report import build_report, main, render
from peftbench.report.defaults import method_defaults, short_setting_label
from peftbench.report.terminal import HEADERS, fit_grid

GOLDEN = Path(__file__).resolve().parent / "data" / "report_golden"
LORA_DEFAULTS = '{"alpha":16.0,"dropout":0.0,"rank":8,"target_modules":null,"use_rslora":false}'


def test_the_default_text_report_fits_120_columns_and_wide_keeps_every_column(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main([str(GOLDEN)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    header = next(line for line in lines if line.startswith("Method "))
    for name in ("Setting", "Trainable", "Peak memory", "Throughput", "Score (mean ± std)", "vs best", "Pareto"):
        assert name in header
    assert "95% CI" not in header and "Params vs full" not in header
    assert "(config 9b2ee5)" in text and "(config c4deb8)" in text  # lookalike settings still told apart
    assert "only what differs from the method's defaults" in text
    assert main([str(GOLDEN), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert wide == render(build_report(str(GOLDEN)), "text", wide=True)
    assert "95% CI" in wide and "Params vs full" in wide and max(len(line) for line in wide.splitlines()) > 120


def test_notes_wrap_at_the_terminal_width(monkeypatch, capsys):
    text = render(build_report(str(GOLDEN)), "text", width=80)
    notes = [line for line in text.splitlines() if line.startswith(("* ", "  "))]
    assert len(notes) > 15 and max(len(line) for line in notes) <= 80
    monkeypatch.setenv("COLUMNS", "90")
    main([str(GOLDEN)])
    prose = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("* ", "Warning:"))]
    assert prose and max(len(line) for line in prose) <= 90


def test_the_setting_shows_only_what_differs_from_the_methods_defaults():
    assert method_defaults("lora")["rank"] == 8 and method_defaults("lora")["lr"] == 5e-4  # ${rank} resolved
    assert short_setting_label("lora", LORA_DEFAULTS, 5e-4) == "defaults"
    assert short_setting_label("lora", LORA_DEFAULTS.replace('"rank":8', '"rank":4'), 5e-4) == "rank=4"
    assert short_setting_label("lora", LORA_DEFAULTS, 1e-3) == "lr=0.001"
    assert short_setting_label("full", "{}", 5e-5) == "defaults"
    # A bridged method: its label names the peft type already, so only the rest is shown.
    assert short_setting_label("peft:loha", '{"options":{},"peft_type":"loha"}', 5e-4) == "defaults"
    assert short_setting_label("peft:loha", '{"options":{"r":4},"peft_type":"LOHA"}', 1e-3) == 'options={"r":4} lr=0.001'
    # A bridged run with a shipped recipe's options (method=loha) is named by that recipe.
    loha = '{"options":{"alpha":16,"r":8,"target_modules":null},"peft_type":"loha"}'
    assert short_setting_label("peft:loha", loha, 1e-4) == "method=loha"
    assert short_setting_label("peft:loha", loha, 1e-3) == "method=loha lr=0.001"
    assert short_setting_label("nosuch", '{"k":1}', 0.1) == "k=1 lr=0.1"  # no config file: everything shown


def test_a_too_wide_grid_cuts_the_setting_column_and_keeps_the_tag():
    rows = [["lora", "alpha=32 dropout=0.1 rank=16 target_modules=[query,key,value] lr=0.0003", *"abcdefg"],
            ["ia3", "defaults (config 9b2ee5)", *"abcdefg"]]
    grid = fit_grid(HEADERS, rows, set(), 110, shrink="Setting")
    assert max(len(line) for line in grid.splitlines()) == 110
    assert "alpha=32 dropout=0.1…" in grid and "defa… (config 9b2ee5)" in grid
