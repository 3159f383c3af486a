"""The real CLI, end to end, into a temporary results_dir; the CSV is read back."""

from __future__ import annotations

import csv
import json

import pytest
from hydra import compose, initialize_config_dir

from peftbench.config import register_configs
from peftbench.record import CSV_COLUMNS
from tests.conftest import REPO, run_cli
from tests.test_record import REQUIRED

FAST = ["train.steps=6", "train.batch_size=8", "train.eval_size=32", "train.log_every=2",
        "train.measure_warmup_steps=1"]


def _rows(results):
    return list(csv.DictReader(open(results / "runs.csv")))


def test_single_run_records_every_column_and_its_files(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli([f"model.name={tiny_bert_dir}", "rank=4", f"results_dir={results}", "wandb.mode=offline",
                    *FAST], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = _rows(results)
    assert list(row) == CSV_COLUMNS
    for column in REQUIRED:
        if column != "peak_gpu_mem_bytes":  # empty on a CPU: not applicable, never made up
            assert row[column] != "", column
    assert row["peak_gpu_mem_bytes"] == "" and row["device"] == "cpu"
    assert row["status"] == "success" and row["method"] == "lora" and row["rank"] == "4"
    assert row["task"] == "vader" and row["metric"] == "accuracy"
    assert 0.0 <= float(row["score"]) <= 1.0
    # 2 layers x (query, value) x rank 4 x (32 + 32), plus the classifier head 32 x 2 + 2.
    assert int(row["trainable_params"]) == 2 * 2 * 4 * 64 + 66
    assert float(row["trainable_pct"]) == pytest.approx(100 * 1090 / int(row["total_params"]))
    assert float(row["train_tokens_per_s"]) > float(row["train_samples_per_s"]) > 0
    assert int(row["peak_rss_bytes"]) > 50 * 2**20
    # LoRA + head tensors in float32, plus the safetensors header.
    assert 4 * 1090 < int(row["checkpoint_bytes"]) < 4 * 1090 + 4096
    assert float(row["infer_latency_ms"]) > 0 and float(row["infer_latency_merged_ms"]) > 0
    assert float(row["best_score"]) >= float(row["score"]) and row["best_step"] == "6"
    assert int(row["train_flops_per_token"]) > 0 and row["mfu"] == ""  # no known peak for a CPU
    assert json.loads(row["package_versions"])["torch"] == row["torch_version"]
    config = json.loads(row["config_json"])
    assert config["method"]["rank"] == 4 and config["seed"] == 0
    detail = json.loads((results / "runs" / f"{row['run_id']}.json").read_text())
    assert [step for step, _ in detail["loss_curve"]] == [2, 4, 6]
    assert list((results / "wandb").glob("offline-run-*/run-*.wandb"))
    assert "accuracy=" in proc.stdout


def test_multirun_sweeps_rank_and_prints_the_table(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli([f"model.name={tiny_bert_dir}", "rank=2,4,8", f"results_dir={results}",
                    "wandb.mode=disabled", *FAST, "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(results)
    assert [r["rank"] for r in rows] == ["2", "4", "8"]
    assert len({r["sweep_id"] for r in rows}) == 1
    assert all(r["status"] == "success" for r in rows)
    counts = [int(r["trainable_params"]) for r in rows]
    # LoRA adds rank x (in + out) per adapted layer: 4 layers of 32 -> 32, so 256 per unit of rank.
    assert counts[1] - counts[0] == 2 * 256 and counts[2] - counts[1] == 4 * 256
    assert rows[0]["sweep_id"] in proc.stdout
    for rank in ("2", "4", "8"):
        assert any(line.split() and rank in line.split() and "lora" in line for line in proc.stdout.splitlines())


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli([f"model.name={tiny_bert_dir}", "task.label_column=label,nosuch", f"results_dir={results}",
                    "wandb.mode=disabled", *FAST, "-m"], cwd=tmp_path)
    assert proc.returncode == 1
    rows = _rows(results)
    assert [r["status"] for r in rows] == ["success", "failed"]
    assert "task.label_column='nosuch'" in rows[1]["error"]
    assert "did not succeed" in proc.stderr


def test_glue_task_uses_the_hub_loader_and_scores(tiny_bert_dir, tmp_path, monkeypatch):
    """task=sst2 cannot download here; its code path runs on a local dataset of SST-2's columns."""
    import datasets

    from peftbench.runner import run

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        rows = [{"sentence": f"a {'good' if i % 2 else 'bad'} film", "label": i % 2, "idx": i} for i in range(40)]
        return datasets.DatasetDict(train=datasets.Dataset.from_list(rows), validation=datasets.Dataset.from_list(rows[:16]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["task=sst2", f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}",
                                           "wandb.mode=disabled", *FAST])
    record = run(cfg, sweep_id="test")
    assert calls == [("glue", "sst2")]
    assert record.status == "success", record.error
    assert record.task == "sst2" and record.metric == "accuracy" and 0 <= record.score <= 1
    assert _rows(tmp_path)[0]["run_id"] == record.run_id


def test_same_seed_same_loss_curve(tiny_bert_dir, tmp_path):
    from peftbench.runner import run

    register_configs()
    curves = []
    for _ in range(2):
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}",
                                               "wandb.mode=disabled", "seed=3", "method.dropout=0.1", *FAST])
        curves.append(run(cfg).loss_curve)
    assert curves[0] == curves[1] and len(curves[0]) == 3


@pytest.mark.slow
def test_default_model_and_task_beat_the_majority_class(tmp_path):
    """The offline default (MiniLM on VADER), as the README runs it, with a shorter budget."""
    results = tmp_path / "results"
    proc = run_cli([f"results_dir={results}", "wandb.mode=disabled", "train.steps=100", "train.eval_size=600"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (row,) = _rows(results)
    assert row["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert float(row["score"]) > 0.56 + 0.15  # 56% of the kept words are negative


def test_all_six_methods_run_through_the_cli(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    proc = run_cli([f"model.name={tiny_bert_dir}", "method=full,lora,houlsby,pfeiffer,prefix,ia3",
                    f"results_dir={results}", "wandb.mode=disabled", *FAST, "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["method"]: r for r in _rows(results)}
    assert sorted(rows) == ["full", "houlsby", "ia3", "lora", "pfeiffer", "prefix"]
    assert all(r["status"] == "success" for r in rows.values())
    counts = {m: int(r["trainable_params"]) for m, r in rows.items()}
    assert counts["full"] == int(rows["full"]["total_params"])
    assert max(v for m, v in counts.items() if m != "full") < 0.1 * counts["full"]
    # Mergeable methods report a merged latency; the others leave it empty.
    assert rows["lora"]["infer_latency_merged_ms"] and rows["ia3"]["infer_latency_merged_ms"]
    assert rows["houlsby"]["infer_latency_merged_ms"] == "" and rows["prefix"]["infer_latency_merged_ms"] == ""
