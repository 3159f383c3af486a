"""The life of one run, top to bottom: config -> model -> method -> data -> train -> measure -> record.

Each stage is one function below. :func:`run` never raises for a failed run: the failure is recorded
(status ``failed`` with its error) so a sweep goes on; Ctrl-C records ``cancelled`` and re-raises.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as safetensors_bytes
from torch import nn

from peftbench import provenance
from peftbench.api import (
    apply_method,
    count_parameters,
    is_mergeable,
    merge_method,
    method_label,
    method_state,
    step_hook,
    unmerge_method,
)
from peftbench.budget import BatchPlan
from peftbench.config import RECIPE_KEYS, Validated, validate
from peftbench.errors import ConfigError
from peftbench.measure import (
    MemoryMeter,
    ThroughputMeter,
    device_name,
    peak_flops,
    release_device_memory,
    synchronize,
    train_flops_per_token,
)
from peftbench.models import load_model
from peftbench.progress import Progress
from peftbench.record import RunRecord
from peftbench.sinks import save_record
from peftbench.tasks import TaskData, load_task

# Keys that do not change what a run computes, left out of its identity (run_key). The top-level
# `rank` is there too: methods with a rank carry its resolved value in their own node, and for the
# others (full fine-tuning) it changes nothing.
NOT_IN_RUN_KEY = ("results_dir", "wandb", "verbose", "force", "rank", "hydra")


def already_done(cfg: DictConfig) -> dict[str, str] | None:
    """The recorded successful row with this config's run_key, unless ``force=true``."""
    if cfg.get("force"):
        return None
    key = run_key(OmegaConf.to_container(cfg, resolve=True))
    path = Path(str(cfg.results_dir)) / "runs.csv"
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("run_key") == key and row.get("status") == "success":
                return row
    return None


def run(cfg: DictConfig, sweep_id: str = "") -> RunRecord:
    """Runs one benchmark run from a composed config and records it, whatever happens."""
    record = RunRecord(sweep_id=sweep_id)
    config = OmegaConf.to_container(cfg, resolve=False)
    results_dir = Path(str(cfg.get("results_dir", "results")))
    device = torch.device("cpu")
    stats = TrainStats()
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
        describe(record, config)
        checked = validate(cfg)  # every bad value is refused here, before any work
        device = pick_device(checked.run.device)
        record.lr, record.device, record.eval_on = checked.lr, str(device), checked.run.eval_on
        record.schedule, record.warmup_ratio = checked.schedule, checked.warmup_ratio
        record.budget_unit, record.budget = checked.budget
        quiet_libraries(checked.run.verbose)
        seed_everything(checked.run.seed)
        memory = MemoryMeter(device)
        memory.start()
        model, tokenizer = build_model(checked, device, record)
        data = load_task(checked.run.task, tokenizer, checked.run.train, eval_on=checked.run.eval_on)
        if checked.run.train.eval_at_start:  # the zero-shot score, as step 0 of the evaluation curve
            stats.eval_curve.append((0, evaluate(model, tokenizer, data, checked, device)[0]))
        train(model, tokenizer, data, checked, device, stats)
        score(record, model, tokenizer, data, checked, device)
        measure_inference(record, model, tokenizer, data, checked, device)
        record.checkpoint_bytes = len(safetensors_bytes(method_state(model, checked.method_name)))
        fill_measurements(record, stats, memory, checked)  # the memory peak covers all of the above
        del model
    except KeyboardInterrupt as err:
        record.fail(err, status="cancelled")
        raise
    except Exception as err:
        record.fail(err)
    finally:
        fill_progress(record, stats)
        record.close()
        save_record(record, results_dir, config, config.get("wandb") or {})
        release_device_memory(device)
    return record


def describe(record: RunRecord, config: dict[str, Any]) -> None:
    """Fills what identifies the run, from the raw config, so even a refused run is labelled."""
    method, model, task = (config.get(k) or {} for k in ("method", "model", "task"))
    record.method, record.model, record.task = method_label(method), model.get("name", ""), task.get("name", "")
    record.seed = config.get("seed")
    record.rank = config.get("rank") if "rank" in method else None
    settings = {k: v for k, v in method.items() if k not in RECIPE_KEYS}
    record.method_settings = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    record.run_key = run_key(config)
    record.setting_key = run_key({k: v for k, v in config.items() if k != "seed"})
    record.config_json = json.dumps(config, sort_keys=True, default=str)
    record.git_sha, record.git_dirty, record.git_source = provenance.git_state(Path.cwd())
    packages = provenance.package_versions()
    record.package_versions = json.dumps(packages, sort_keys=True)
    record.python_version, record.torch_version = packages["python"], packages["torch"]
    record.transformers_version = packages["transformers"]
    record.hostname = provenance.hostname()
    record.num_threads = torch.get_num_threads()


def run_key(config: dict[str, Any]) -> str:
    """A stable identity of what a run computes: the resolved config, seed included, minus paths."""
    kept = {k: v for k, v in config.items() if k not in NOT_IN_RUN_KEY}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={requested!r} but this machine has no CUDA device; use device=cpu or auto")
    return device


def quiet_libraries(verbose: bool) -> None:
    import datasets
    import transformers

    if verbose:
        transformers.logging.set_verbosity_warning()
        datasets.enable_progress_bars()
        return
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed)


def build_model(checked: Validated, device: torch.device, record: RunRecord) -> tuple[nn.Module, Any]:
    """Loads the model, applies the method, counts parameters and moves it to the device."""
    run_cfg = checked.run
    model, tokenizer = load_model(run_cfg.model, run_cfg.task)
    model = apply_method(model, checked.method_name, **checked.method_settings)
    record.trainable_params, record.total_params = count_parameters(model)
    record.trainable_pct = 100.0 * record.trainable_params / record.total_params
    record.train_flops_per_token = train_flops_per_token(model)
    return model.to(device), tokenizer


def train_loader(data: TaskData, tokenizer, checked: Validated) -> torch.utils.data.DataLoader:
    """The training batches of the run's budget, in the seed's order (:class:`BatchPlan`); its
    ``len`` is the budget's optimizer steps."""
    lengths = pyarrow.compute.list_value_length(data.train.with_format("arrow")["input_ids"]).to_pylist()
    plan = BatchPlan(lengths, checked.run.train.batch_size, *checked.budget, seed=checked.run.seed)
    return torch.utils.data.DataLoader(data.train.with_format("python"), batch_sampler=plan,
                                       collate_fn=data.kind.collator(tokenizer))


def eval_loader(dataset, data: TaskData, tokenizer, checked: Validated) -> torch.utils.data.DataLoader:
    """Batches of an evaluation split, in order."""
    return torch.utils.data.DataLoader(dataset.with_format("python"), batch_size=checked.run.train.eval_batch_size,
                                       collate_fn=data.kind.collator(tokenizer))


@dataclass
class TrainStats:
    """How far training went; filled while it runs, so a failed run still tells where it stopped."""

    budget_steps: int | None = None
    steps: int = 0
    samples: int = 0
    tokens: int = 0
    stop_reason: str = ""
    wall_s: float = 0.0
    meter: ThroughputMeter | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)


def train(model: nn.Module, tokenizer, data: TaskData, checked: Validated, device: torch.device,
          stats: TrainStats) -> None:
    """AdamW on the planned batches of the budget, with the run's warm-up and schedule; loss read every
    ``log_every`` steps; evaluation every ``eval_every`` steps, with early stopping if configured."""
    t = checked.run.train
    loader = train_loader(data, tokenizer, checked)
    total = stats.budget_steps = len(loader)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=checked.lr, weight_decay=t.weight_decay)
    scheduler = make_schedule(optimizer, checked.schedule, int(checked.warmup_ratio * total), total)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None and device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16" and device.type == "cuda")
    meter = stats.meter = ThroughputMeter(device, warmup_steps=min(t.measure_warmup_steps, total - 1))
    progress, stopper = Progress(total, "train"), EarlyStopper(t.early_stopping_patience, t.early_stopping_min_delta)
    on_step = step_hook(checked.method_name)  # a method's own per-step work (AdaLoRA's rank budget), or None
    loss_sum, since = torch.zeros((), device=device), 0
    model.train()
    started = time.perf_counter()
    meter.begin()
    for step, batch in enumerate(loader, start=1):
        samples, tokens = len(batch["labels"]), int(batch["attention_mask"].sum())  # on the CPU: no sync
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast:
            loss = model(**batch).loss
        scaler.scale(loss).backward()
        if t.max_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if on_step is not None:
            on_step(model, step, total)
        optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach().float()
        since += 1
        meter.step_done(samples, tokens)
        stats.steps, stats.samples, stats.tokens = step, stats.samples + samples, stats.tokens + tokens
        if step % t.log_every == 0 or step == total:
            mean = (loss_sum / since).item()  # the only sync point inside the loop
            if not math.isfinite(mean):
                raise FloatingPointError(f"training loss became {mean} by step {step}")
            stats.loss_curve.append((step, mean))
            loss_sum.zero_()
            since = 0
            progress.update(step, loss=mean, samples_per_s=meter.samples_per_s_so_far())
        if t.eval_every and step % t.eval_every == 0 and step < total:
            meter.pause()  # evaluation is not training time
            stats.eval_curve.append((step, evaluate(model, tokenizer, data, checked, device)[0]))
            model.train()
            meter.resume()
            if stopper.should_stop(stats.eval_curve[-1][1]):
                stats.stop_reason = "early_stopping"
                break
    meter.end()
    progress.close()
    stats.wall_s = time.perf_counter() - started


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int):
    """Linear warm-up over ``warmup_steps``, then ``schedule`` (linear or cosine decay to 0 at
    ``total_steps``, or constant)."""
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


class EarlyStopper:
    """Says stop once ``patience`` evaluations in a row failed to beat the best score by more than
    ``min_delta`` (higher scores are better for every metric peftbench ships); never, if
    ``patience`` is None."""

    def __init__(self, patience: int | None, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.misses = -math.inf, 0

    def should_stop(self, score: float) -> bool:
        if score > self.best + self.min_delta:
            self.best, self.misses = score, 0
        else:
            self.misses += 1
        return self.patience is not None and self.misses >= self.patience


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer, data: TaskData, checked: Validated, device: torch.device,
             split: str | None = None) -> tuple[float, float, dict[str, float]]:
    """Scores the evaluation split (or the extra evaluation ``split``); returns ``(score, evaluation
    samples/s, every metric value)``."""
    dataset = data.eval if split is None else data.extra_evals[split]
    loader = eval_loader(dataset, data, tokenizer, checked)
    model.eval()
    predictions, references = [], []
    progress = Progress(len(loader), "eval")
    synchronize(device)
    started = time.perf_counter()
    for i, batch in enumerate(loader, start=1):
        references += data.kind.references(batch.pop("labels"), tokenizer)
        predictions += data.kind.predict(model, {k: v.to(device) for k, v in batch.items()}, tokenizer)
        progress.update(i)
    synchronize(device)
    elapsed = time.perf_counter() - started
    progress.close()
    score, scores = data.score(predictions, references)
    return score, len(dataset) / elapsed, scores


def score(record: RunRecord, model: nn.Module, tokenizer, data: TaskData, checked: Validated,
          device: torch.device) -> None:
    """The final score on the evaluation split, and every metric value, extra splits included
    (MNLI's mismatched set as ``{"validation_mismatched/accuracy": ...}``), in ``metrics_json``."""
    record.score, record.eval_samples_per_s, scores = evaluate(model, tokenizer, data, checked, device)
    for split in data.extra_evals:
        scores |= {f"{split}/{k}": v for k, v in evaluate(model, tokenizer, data, checked, device, split)[2].items()}
    record.metric, record.metrics_json, record.scored_on = data.metric, json.dumps(scores), data.scored_on


def fill_progress(record: RunRecord, stats: TrainStats) -> None:
    """How far training went against its budget, for every run that started training (a failed
    or cancelled one too: it is marked as stopped early, with its status as the reason)."""
    if stats.budget_steps is None:
        return
    record.budget_steps, record.train_steps = stats.budget_steps, stats.steps
    record.train_samples, record.train_tokens = stats.samples, stats.tokens
    reason = stats.stop_reason or (record.status if record.status in ("failed", "cancelled") else "")
    record.stopped_early, record.stop_reason = bool(reason), reason
    record.loss_curve = stats.loss_curve


def fill_measurements(record: RunRecord, stats: TrainStats, memory: MemoryMeter, checked: Validated) -> None:
    peak = memory.stop()
    record.peak_rss_bytes = peak.peak_rss_bytes
    record.peak_gpu_mem_bytes, record.peak_gpu_reserved_bytes = peak.peak_gpu_mem_bytes, peak.peak_gpu_reserved_bytes
    record.train_samples_per_s, record.train_tokens_per_s = stats.meter.samples_per_s, stats.meter.tokens_per_s
    record.train_time_s = stats.wall_s
    record.final_train_loss = stats.loss_curve[-1][1] if stats.loss_curve else None
    # An early stop evaluated the model at its last step already: the final score replaces that point.
    record.eval_curve = [*(p for p in stats.eval_curve if p[0] != stats.steps), (stats.steps, record.score)]
    record.best_step, record.best_score = max(record.eval_curve, key=lambda point: point[1])
    record.device_name = device_name(torch.device(record.device))
    if record.train_tokens_per_s:
        record.achieved_flops_per_s = record.train_flops_per_token * record.train_tokens_per_s
        peak_flops_per_s = peak_flops(record.device_name, checked.run.train.precision)
        record.mfu = record.achieved_flops_per_s / peak_flops_per_s if peak_flops_per_s else None


@torch.no_grad()
def measure_inference(record: RunRecord, model: nn.Module, tokenizer, data: TaskData, checked: Validated,
                      device: torch.device) -> None:
    """Mean latency of a forward pass on evaluation batches, unmerged and (if it can) merged."""
    n = checked.run.train.latency_batches
    if n == 0:
        return
    loader = eval_loader(data.eval, data, tokenizer, checked)
    inputs = [{k: v.to(device) for k, v in b.items() if k != "labels"} for b in itertools.islice(loader, n)]
    model.eval()
    record.infer_latency_ms = forward_latency_ms(model, inputs, device)
    if is_mergeable(checked.method_name, model):
        merge_method(model, checked.method_name)
        record.infer_latency_merged_ms = forward_latency_ms(model, inputs, device)
        unmerge_method(model, checked.method_name)


def forward_latency_ms(model: nn.Module, inputs: list[dict], device: torch.device) -> float:
    model(**inputs[0])  # warm-up: first-call allocations and kernel choices
    synchronize(device)
    started = time.perf_counter()
    for batch in inputs:
        model(**batch)
    synchronize(device)
    return 1000.0 * (time.perf_counter() - started) / len(inputs)
