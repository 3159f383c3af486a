"""Everyday command lines and local data: ``-m`` anywhere, a rerun sweep that skips everything,
``--cfg job`` readable, results folders that cannot be written, string labels, the data_files
shorthand, and an encoder refused for a generation task."""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile

import pytest

from peftbench.__main__ import hydra_argv, print_job_config
from peftbench.config import TaskConfig, validate
from peftbench.errors import ConfigError
from peftbench.results_dir import check_results_dir
from peftbench.tasks import infer_label_names
from tests.conftest import run_cli
from tests.test_models import compose_run, one_torch_thread  # noqa: F401 (autouse)

FAST = ["train.steps=3", "train.batch_size=8", "train.eval_size=16", "train.log_every=1",
        "train.measure_warmup_steps=0", "train.latency_batches=0", "wandb.mode=disabled"]


def test_multirun_flag_moves_to_the_front_wherever_it_stands():
    assert hydra_argv(["method=lora", "rank=2,4", "-m", "train.steps=5"]) == ["-m", "method=lora", "rank=2,4",
                                                                            "train.steps=5"]
    assert hydra_argv(["a=1", "--multirun", "b=2"]) == ["--multirun", "a=1", "b=2"]
    assert hydra_argv(["a=1", "b=2"]) == ["a=1", "b=2"]
    assert hydra_argv(["--cfg", "job", "rank=4"]) == ["--cfg", "job", "rank=4", "--resolve"]
    assert hydra_argv(["--cfg", "hydra"]) == ["--cfg", "hydra"]  # resolved alone, hydra.run.dir would fail


@pytest.mark.parametrize("group,shows", [("hydra/launcher=slurm", "submitit"), ("hydra/sweeper=lr_search", "optuna")])
def test_cfg_hydra_prints_the_launcher_and_sweeper_configs(group, shows, tmp_path):
    proc = run_cli(["--cfg", "hydra", group], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shows in proc.stdout and "${results_dir}/hydra" in proc.stdout


def test_m_among_the_overrides_runs_a_sweep_and_a_rerun_says_all_were_done(tiny_bert_dir, tmp_path):
    results = tmp_path / "results"
    args = ["method=lora", "rank=2,4", "-m", f"model.name={tiny_bert_dir}", f"results_dir={results}", *FAST]
    first = run_cli(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    rows = list(csv.DictReader(open(results / "runs.csv")))
    assert [r["rank"] for r in rows] == ["2", "4"] and all(r["status"] == "success" for r in rows)
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    ids = ", ".join(r["run_id"] for r in rows)
    assert f"2 of 2 runs already done in an earlier sweep: {ids}" in again.stdout
    assert "no runs recorded" not in again.stdout
    assert len(list(csv.DictReader(open(results / "runs.csv")))) == 2


def test_a_missing_launcher_plugin_names_the_extra_that_installs_it(monkeypatch):
    import peftbench.__main__ as cli

    monkeypatch.setitem(cli.PLUGINS, "hydra/launcher=ray", ("hydra_plugins.no_such_launcher", "ray"))
    message = cli.check_plugins(["-m", "hydra/launcher=ray", "rank=2,4"])
    assert "hydra/launcher=ray needs a Hydra plugin" in message and "pip install 'peftbench[ray]'" in message
    assert cli.check_plugins(["hydra/launcher=joblib"]) is None  # installed in the dev environment
    assert cli.check_plugins(["rank=4"]) is None


def test_a_rank_the_method_does_not_read_is_noted(tiny_bert_dir, tmp_path):
    base = [f"model.name={tiny_bert_dir}", f"results_dir={tmp_path / 'r'}", *FAST]
    ia3 = run_cli(["method=ia3", "rank=4", *base], cwd=tmp_path)
    assert ia3.returncode == 0, ia3.stderr
    assert "peftbench: note: rank=4 is not read by method=ia3: it has no rank" in ia3.stderr
    vera = run_cli(["method=vera", "rank=4", "method.rank=16", *base], cwd=tmp_path)
    assert vera.returncode == 0, vera.stderr
    assert "rank=4 is not read by method=vera: its own rank is method.rank (now 16)" in vera.stderr
    lora = run_cli(["method=lora", "rank=4", *base], cwd=tmp_path)
    assert lora.returncode == 0 and "note: rank" not in lora.stderr


def test_a_job_that_repeats_another_of_its_sweep_is_named_as_such(tmp_path):
    from peftbench.callbacks import skipped_message

    earlier = {"run_id": "aaa", "sweep_id": "old"}
    same = {"run_id": "bbb", "sweep_id": "now"}
    text = skipped_message([earlier, same, same], total=4, sweep_id="now")
    assert "1 of 4 runs already done in an earlier sweep: aaa" in text
    assert "2 of 4 jobs are the same run as another job of this sweep" in text and text.endswith("run once: bbb")
    assert "earlier" not in skipped_message([same], total=2, sweep_id="now")


def test_the_skip_names_the_latest_success_the_one_the_report_counts(tmp_path):
    from omegaconf import OmegaConf

    from peftbench.identity import already_done, run_key

    cfg = compose_run([f"results_dir={tmp_path}"])
    key = run_key(OmegaConf.to_container(cfg, resolve=True))
    with open(tmp_path / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["run_id", "run_key", "status"])
        writer.writeheader()
        writer.writerows([{"run_id": "first", "run_key": key, "status": "success"},
                          {"run_id": "other", "run_key": "x", "status": "success"},
                          {"run_id": "forced", "run_key": key, "status": "success"},
                          {"run_id": "broken", "run_key": key, "status": "failed"}])
    assert already_done(cfg)["run_id"] == "forced"
    assert already_done(compose_run([f"results_dir={tmp_path}", "force=true"])) is None


def test_cfg_job_is_resolved_shows_the_budget_and_only_this_tasks_keys(capsys):
    def printed(overrides):
        assert print_job_config(overrides) == 0
        out = capsys.readouterr().out
        return out, "".join(line for line in out.splitlines(keepends=True) if not line.startswith("#"))

    out, yaml = printed(["rank=4"])
    assert out.startswith("# budget: 150 steps (train.steps)")
    assert "left out:" in out and "digits" in out  # said in the comment, not printed as keys
    assert "${" not in yaml and "  rank: 4\n" in yaml  # the method's rank is the number, not ${rank}
    assert "digits:" not in yaml and "operations:" not in yaml and "min_abs_rating: 0.5" in yaml
    _, yaml = printed(["task=arithmetic"])
    assert "digits: 3" in yaml and "min_abs_rating" not in yaml and "num_labels" not in yaml


def test_cfg_job_of_a_sweep_without_multirun_says_what_hydra_says_without_a_traceback(capsys):
    assert print_job_config(["rank=2,4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peftbench: Ambiguous value for argument 'rank=2,4'") and "--multirun" in err


def test_a_results_dir_under_a_file_is_refused_before_anything_runs(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    proc = run_cli([f"results_dir={blocker}/results", "wandb.mode=disabled"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert f"results_dir='{blocker}/results' cannot hold the run's results" in proc.stderr
    assert "is a file" in proc.stderr and "[train]" not in proc.stderr
    with pytest.raises(ConfigError, match="results_dir=.*is a file"):
        validate(compose_run([f"results_dir={blocker}"]))


def test_a_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    check_results_dir(str(folder / "new" / "deeper"))  # writable: passes, and creates nothing
    assert list(folder.iterdir()) == []
    if os.geteuid() != 0:  # root writes to a read-only folder: a real chmod tests only other users
        folder.chmod(0o555)
        with pytest.raises(ConfigError, match="no file can be made in"):
            check_results_dir(str(folder / "results"))
        folder.chmod(0o755)

    def read_only_filesystem(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only_filesystem)
    with pytest.raises(ConfigError, match=r"results_dir=.*ro/results.*no file can be made in .*ro "
                                          r"\(making one there failed: Read-only file system\)"):
        check_results_dir(str(folder / "results"))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_folder_under_proc_is_refused_in_words_that_say_why():
    # /proc answers "No such file or directory" to a new file; the message must not read as if /proc were missing.
    with pytest.raises(ConfigError) as refused:
        check_results_dir("/proc/x")
    message = str(refused.value)
    assert "no file can be made in /proc (making one there failed:" in message
    assert "/proc cannot be written (No such file" not in message


def test_a_methods_own_setting_is_named_under_the_method_node():
    with pytest.raises(ConfigError, match=r"^method\.reduction_factor must be a positive integer, got 0"):
        validate(compose_run(["method=houlsby", "method.reduction_factor=0"]))
    with pytest.raises(ConfigError, match=r"^rank \(LoRA's r"):  # the top-level rank= is what users set
        validate(compose_run(["rank=0"]))


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_string_labels_are_inferred_sorted_and_recorded(tiny_bert_dir, tmp_path, capsys):
    from peftbench.runner import run

    words = ["good", "bad", "great", "awful", "fine", "poor", "nice", "vile"] * 4
    train = _write_csv(tmp_path / "train.csv",
                       [{"text": w, "label": "pos" if i % 2 == 0 else "neg"} for i, w in enumerate(words)])
    cfg = compose_run(["task=local", f"task.data_files={train}", f"model.name={tiny_bert_dir}",
                       f"results_dir={tmp_path / 'results'}", *FAST])
    record = run(cfg)
    assert record.status == "success", record.error
    task = json.loads(record.config_json)["task"]
    assert task["label_names"] == ["neg", "pos"] and task["num_labels"] == 2
    assert capsys.readouterr().out.count("class names inferred from the training split's 'label' column") == 1
    row = next(csv.DictReader(open(tmp_path / "results" / "runs.csv")))
    assert json.loads(row["config_json"])["task"]["label_names"] == ["neg", "pos"]


def test_label_inference_rules(tmp_path):
    three = _write_csv(tmp_path / "three.csv", [{"text": "a", "label": v} for v in ["neutral", "positive", "negative"]])
    ids = _write_csv(tmp_path / "ids.csv", [{"text": "a", "label": v} for v in [0, 1, 1]])
    typo = _write_csv(tmp_path / "typo.csv", [{"text": "a", "label": v} for v in ["1", "maybe"]])
    one = _write_csv(tmp_path / "one.csv", [{"text": "a", "label": "pos"}] * 3)

    def task(path, **settings):
        return TaskConfig(name="t", source="local", text_column="text", data_files=str(path), **settings)

    assert infer_label_names(task(three)) == ["negative", "neutral", "positive"]
    assert infer_label_names(task(three, num_labels=3, label_names=["positive", "neutral", "negative"])) is None
    assert infer_label_names(task(ids)) is None
    assert infer_label_names(task(typo)) is None  # a stray name among ids stays an error of load_task
    assert infer_label_names(task(three, num_labels=1)) is None  # regression
    with pytest.raises(ConfigError, match="holds one label only, 'pos'"):
        infer_label_names(task(one))


def test_data_files_path_is_the_training_file():
    checked = validate(compose_run(["task=local", "task.data_files=data/train.csv"]))
    assert checked.run.task.data_files == {"train": "data/train.csv"}
    checked = validate(compose_run(["task=local", "task.data_files.train=a.csv", "task.data_files.validation=b.csv"]))
    assert checked.run.task.data_files == {"train": "a.csv", "validation": "b.csv"}
    assert TaskConfig(name="t", source="local", train_split="fit", data_files="x.csv").data_files == {"fit": "x.csv"}
    with pytest.raises(ConfigError, match="task.data_files=.*must be a path"):
        TaskConfig(name="t", source="local", data_files=["x.csv"])


def test_an_encoder_is_refused_for_a_generation_task(tiny_bert_dir):
    from peftbench.config import ModelConfig
    from peftbench.models import load_model

    task = TaskConfig(name="arithmetic", kind="causal_lm", source="arithmetic", label_column="answer")
    with pytest.raises(ConfigError, match=r"task.kind='causal_lm'.*has no trained head.*cls\.predictions.*model=gpt2"):
        load_model(ModelConfig(name=str(tiny_bert_dir)), task)


def test_examples_cut_by_max_seq_length_are_said_before_training(tiny_bert_dir, tmp_path, capsys):
    from peftbench.runner import run

    words = ["good film", "bad plot and worse acting", "great", "awful, just awful"] * 4
    train = _write_csv(tmp_path / "train.csv", [{"text": w, "label": i % 2} for i, w in enumerate(words)])
    base = ["task=local", f"task.data_files={train}", f"model.name={tiny_bert_dir}", *FAST]
    cap = min(len(ids) for ids in compose_tokens(tiny_bert_dir, words))  # every row reaches it
    record = run(compose_run([*base, f"train.max_seq_length={cap}", f"results_dir={tmp_path / 'a'}"]))
    err = capsys.readouterr().err
    assert record.status == "success", record.error
    assert re.search(rf"peftbench: (\d+) of \1 training examples \(100%\) reach train\.max_seq_length={cap} ", err)
    run(compose_run([*base, f"results_dir={tmp_path / 'b'}"]))  # the default 128: nothing cut, nothing said
    assert "reach train.max_seq_length" not in capsys.readouterr().err


def compose_tokens(model_dir, texts):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)(texts)["input_ids"]
