"""The life of one run, top to bottom: config -> model -> method -> data -> train -> measure -> record.

Each stage is one function below. :func:`run` never raises for a failed run: the failure is recorded
(status ``failed`` with its error) so a sweep goes on; Ctrl-C records ``cancelled`` and re-raises.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save as safetensors_bytes
from torch import nn

from peftbench import cache, distributed, forgetting, provenance, spectrum
from peftbench.api import (
    apply_method,
    count_parameters,
    is_mergeable,
    merge_method,
    method_label,
    method_rank,
    method_state,
    step_hook,
    unmerge_method,
    used_method_settings,
)
from peftbench.baseline import majority_baseline
from peftbench.budget import BatchPlan
from peftbench.config import RECIPE_KEYS, SCHEDULES, Validated, validate
from peftbench.contention import Contention, ContentionMeter
from peftbench.errors import ConfigError
from peftbench.identity import canonical_config, run_key
from peftbench.live import NullLogger, RunLogger, start_logger
from peftbench.measure import (
    MemoryMeter,
    MemoryPeak,
    ThroughputMeter,
    device_name,
    model_weight_bytes,
    peak_flops,
    prepended_positions,
    release_device_memory,
    synchronize,
    train_flops_per_token,
)
from peftbench.models import load_model_with_info
from peftbench.progress import Progress
from peftbench.record import RunRecord
from peftbench.results_dir import check_results_dir
from peftbench.sinks import save_record
from peftbench.speed import StageTimer, autocast, compile_model, compile_seconds, used_precision
from peftbench.tasks import TaskData, infer_label_names, load_task, truncation_note, use_label_names


def run(cfg: DictConfig, sweep_id: str = "") -> RunRecord:
    """Runs one benchmark run from a composed config and records it, whatever happens.

    Raises:
        ConfigError: if ``results_dir`` cannot be written, so there is nowhere to record the run.
    """
    record = RunRecord(sweep_id=sweep_id)
    config = OmegaConf.to_container(cfg, resolve=False)
    results_dir = Path(str(cfg.get("results_dir", "results")))
    check_results_dir(str(results_dir))  # before any work: a result that cannot be recorded is lost
    device = torch.device("cpu")
    stats = TrainStats()
    stages = StageTimer()  # the record's stage_times_s; the sinks' writing below comes after it
    logger: RunLogger = NullLogger()
    dist = distributed.Distributed(*distributed.world_from_env())  # joined below, once the config is valid

    def finish() -> None:  # exactly once, here or from rank 0's watch for another rank's failure
        fill_progress(record, stats)
        record.stage_times_s = stages.as_json()
        record.close()
        if dist.is_main:
            save_record(record, results_dir, config, config.get("wandb") or {}, logger)
            dist.mark_recorded()

    quiet_import_warnings(bool(cfg.get("verbose")))  # before the config's check imports peft
    try:
        with stages("setup"):
            config = canonical_config(OmegaConf.to_container(cfg, resolve=True))  # peft_type=LOHA is loha
            describe(record, config)
            checked = validate(cfg)  # every bad value is refused here, before any work
            quiet_libraries(checked.run.verbose)  # before the first library call (a local CSV is read next)
            if (names := infer_label_names(checked.run.task)) is not None:  # pos/neg in a CSV: names in id order
                checked.run.task = use_label_names(checked.run.task, names)
                config["task"] |= {"label_names": names, "num_labels": len(names)}
                record.config_json = json.dumps(config, sort_keys=True, default=str)
            dist = distributed.start(checked.run.train.strategy, checked.run.train.batch_size,
                                     pick_device(checked.run.device))
            dist.watch_for_failures(lambda error: record.fail(distributed.RemoteRankError(error)), finish)
            device = dist.device(pick_device(checked.run.device))
            record.lr, record.device, record.eval_on = checked.lr, str(device), checked.run.eval_on
            record.schedule, record.warmup_ratio = checked.schedule, checked.warmup_ratio
            record.budget_unit, record.budget = checked.budget
            record.precision = used_precision(checked.run.train.precision, device)
            if record.precision != checked.run.train.precision and dist.is_main:
                print(f"peftbench: train.precision={checked.run.train.precision} is not available on {device} "
                      f"(fp16 autocast needs CUDA; bf16 a device that supports it): this run trains in "
                      f"{record.precision}, and its row says so (precision={record.precision})", file=sys.stderr)
            if dist.is_main:  # wandb's run starts with ours (one per run, on rank 0), model not yet loaded
                logger = start_logger(record, config, results_dir)
            seed_everything(checked.run.seed)
            memory = MemoryMeter(device)
            memory.start()
        with stages("load"):
            probe = forgetting.Probe(checked.run.forgetting, checked.run.task.kind == "causal_lm", device)
            memo = cache.base_states_memo(checked.run, device)  # once per process for the same base model
            def before_method(pretrained: nn.Module, tok: Any) -> None:
                probe.take_base(pretrained, tok, memo=memo)
                memory.restart_peak()  # every run of a sweep measured from here: load and probe left out

            model, tokenizer = build_model(checked, device, record, before_method=before_method)
            record_used_settings(record, model, checked.method_name, dist.is_main)
        with stages("data"):  # tokenised once per process for the same tokenizer and settings
            data = cache.load_task(checked.run.task, checked.run.model, tokenizer, checked.run.train,
                                   checked.run.eval_on, loader=load_task)
            record.baseline_score = majority_baseline(data)
            if dist.is_main and (note := truncation_note(data, checked.run.train.max_seq_length)):
                print(note, file=sys.stderr)
        stats.compile_started_s = compile_seconds() if checked.run.train.compile else None
        if checked.run.train.eval_at_start:  # the zero-shot score, as step 0 of the evaluation curve
            with stages("evaluate"):
                zero_shot, _, scores = evaluate(model, tokenizer, data, checked, device)
                stats.eval_curve.append((0, zero_shot))
                record.zero_shot_score = zero_shot
                logger.log_eval(0, scores)
        with stages("train"):
            w0 = spectrum.snapshot(model, checked.method_name, checked.run.spectrum)
            busy = ContentionMeter(device).start()
            train(model, tokenizer, data, checked, device, stats, logger, dist)
            fill_contention(record, busy.stop())
            model = dist.whole_model(model, lambda: build_model(checked, device, RunRecord())[0])
        if dist.is_main:  # once, on the whole trained model (every rank of a distributed run holds it)
            with stages("evaluate"):
                score(record, model, tokenizer, data, checked, device)
                logger.log_eval(stats.steps, json.loads(record.metrics_json))
            with stages("latency"):
                measure_inference(record, model, tokenizer, data, checked, device)
            with stages("record"):
                record.checkpoint_bytes = len(safetensors_bytes(method_state(model, checked.method_name)))
        # The memory peak covers all of the above; with several ranks: the largest, every rank's in per_rank.
        peak, (stats.samples, stats.tokens), record.per_rank = dist.combine(
            memory.stop(), stats.meter, [stats.samples, stats.tokens])
        if dist.is_main:
            fill_measurements(record, stats, peak, checked, prepended_positions(model))
            with stages("answers"):
                update = spectrum.measure(model, w0, checked.run.spectrum)
                if update.note:
                    print(f"peftbench: note: {update.note}", file=sys.stderr)
                fill_answers(record, update, probe.measure(model))
        dist.share(record)
        del model
    except KeyboardInterrupt as err:
        record.fail(err, status="cancelled")
        err.record = record  # the command line says which run was cancelled, and where it is recorded
        raise
    except Exception as err:
        record.fail(err)
        dist.failed(record)
    finally:
        dist.finish_once(finish)
        release_device_memory(device)
        dist.close(record.status)  # a failed distributed run ends every rank's process here
    return record


def describe(record: RunRecord, config: dict[str, Any]) -> None:
    """Fills what identifies the run, from the raw config, so even a refused run is labelled."""
    method, model, task = (config.get(k) or {} for k in ("method", "model", "task"))
    record.method, record.model, record.task = method_label(method), model.get("name", ""), task.get("name", "")
    record.seed = config.get("seed")
    # The method's own (LoRA's follows the top-level `rank`; VeRA's is its own; peft's is method.options.r).
    record.rank = (method_rank(method) or (None, None))[1]
    settings = {k: v for k, v in method.items() if k not in RECIPE_KEYS}
    record.method_settings = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    record.world_size = distributed.world_from_env()[0]
    record.strategy = (config.get("train") or {}).get("strategy", "ddp") if record.world_size > 1 else "single"
    record.run_key = run_key(config, record.world_size)
    record.setting_key = run_key({k: v for k, v in config.items() if k != "seed"}, record.world_size)
    record.config_json = json.dumps(config, sort_keys=True, default=str)
    record.git_sha, record.git_dirty, record.git_source = provenance.git_state(Path.cwd())
    packages = provenance.package_versions()
    record.package_versions = json.dumps(packages, sort_keys=True)
    record.python_version, record.torch_version = packages["python"], packages["torch"]
    record.transformers_version = packages["transformers"]
    record.hostname = provenance.hostname()
    record.num_threads = torch.get_num_threads()


def record_used_settings(record: RunRecord, model: nn.Module, method: str, say: bool) -> None:
    """The row's ``method_settings`` and ``rank`` as the applied method uses them (peft may adjust a
    given value to a layer's width, warning only: OFT's ``oft_block_size=5`` is 4 on a 32-wide layer), and,
    with ``say``, a note naming each given value it changed. ``run_key`` stays that of the settings given."""
    settings, record.rank, changed = used_method_settings(model, method, json.loads(record.method_settings or "{}"))
    record.method_settings = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    if changed and say:
        print(f"peftbench: note: {record.method} ran with other values than given: {'; '.join(changed)}. "
              "The row's method_settings and rank record the values used.", file=sys.stderr)


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
    quiet_import_warnings(verbose)


def quiet_import_warnings(verbose: bool) -> None:
    """Unless ``verbose``, silences a warning a library logs when first imported that says nothing to a
    user: bitsandbytes (imported by peft and our QLoRA) warns on a CPU with AVX-512 BF16 that the
    optional `kernels` package is missing, and falls back to its own 4-bit matmul on the CPU. A
    logger's level holds before its module is imported, so this runs before anything imports peft
    (checking a method=peft config does)."""
    if not verbose:
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed)


def build_model(checked: Validated, device: torch.device, record: RunRecord,
                before_method: Callable[[nn.Module, Any], None] | None = None) -> tuple[nn.Module, Any]:
    """Loads the model (a fresh copy of the base weights cached in this process after the first
    load, :mod:`peftbench.cache`), applies the method, counts parameters, moves it to the device,
    measures its stored size (after the move: a 4-bit base reaches a GPU only in 4 bits) and, with
    ``train.compile``, compiles it in place.

    ``before_method(model, tokenizer)`` sees the pretrained model on the device before the method is
    applied (the forgetting probe's base states)."""
    run_cfg = checked.run
    model, tokenizer = cache.load_model(run_cfg.model, run_cfg.task, loader=load_model_with_info)
    if before_method is not None:
        model = model.to(device)
        before_method(model, tokenizer)
    model = apply_method(model, checked.method_name, **checked.method_settings)
    record.trainable_params, record.total_params = count_parameters(model)
    record.trainable_pct = 100.0 * record.trainable_params / record.total_params
    record.train_flops_per_token = train_flops_per_token(model)
    model = model.to(device)
    record.model_weight_bytes = model_weight_bytes(model)
    t = run_cfg.train
    return (compile_model(model, t.compile_backend, t.compile_mode) if t.compile else model), tokenizer


def train_loader(data: TaskData, tokenizer, checked: Validated,
                 dist: distributed.Distributed | None = None) -> torch.utils.data.DataLoader:
    """The training batches of the run's budget, in the seed's order (:class:`BatchPlan`); its
    ``len`` is the budget's optimizer steps. With ``dist``, this rank's share of each batch."""
    plan = BatchPlan(row_lengths(data.train), checked.run.train.batch_size, *checked.budget, seed=checked.run.seed)
    sampler = dist.shard(plan) if dist is not None else plan
    return torch.utils.data.DataLoader(data.train.with_format("python"), batch_sampler=sampler,
                                       collate_fn=data.kind.collator(tokenizer))


def eval_loader(dataset, data: TaskData, tokenizer, checked: Validated) -> torch.utils.data.DataLoader:
    """Batches of an evaluation split, in the split's order."""
    return torch.utils.data.DataLoader(dataset.with_format("python"), batch_size=checked.run.train.eval_batch_size,
                                       collate_fn=data.kind.collator(tokenizer))


def row_lengths(dataset) -> list[int]:
    """The token count of each row of a tokenised split, read from its Arrow column."""
    return pyarrow.compute.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


def longest_first(dataset) -> list[int]:
    """The evaluation split's row indices by decreasing length (ties in the split's order): batches
    of similar lengths pad little, and the longest batch, the memory peak, comes first."""
    lengths = row_lengths(dataset)
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def in_split_order(values: list, order: list[int]) -> list:
    """``values`` computed on the rows ``order`` picked, put back in the split's order."""
    restored = [None] * len(order)
    for value, row in zip(values, order, strict=True):
        restored[row] = value
    return restored


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
    compile_started_s: float | None = None  # compile_seconds() before training, with train.compile
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    eval_curve: list[tuple[int, float]] = field(default_factory=list)


def train(model: nn.Module, tokenizer, data: TaskData, checked: Validated, device: torch.device,
          stats: TrainStats, logger: RunLogger | None = None, dist: distributed.Distributed | None = None) -> None:
    """AdamW on the planned batches of the budget, with the run's warm-up and schedule; loss read every
    ``log_every`` steps (and told to ``logger`` with the learning rate, throughput and tokens seen);
    evaluation every ``eval_every`` steps, with early stopping if configured. With several ranks
    (``dist``) each trains on its share of every batch, wrapped by DDP or FSDP."""
    logger = logger or NullLogger()
    t, dist = checked.run.train, dist or distributed.Distributed()
    loader = train_loader(data, tokenizer, checked, dist)
    total = stats.budget_steps = len(loader)
    net = dist.wrap(model, device)  # what the forward pass goes through; FSDP shards model in place
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=checked.lr, weight_decay=t.weight_decay)
    scheduler = make_schedule(optimizer, checked.schedule, int(checked.warmup_ratio * total), total)
    precision = used_precision(t.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    meter = stats.meter = ThroughputMeter(device, warmup_steps=min(t.measure_warmup_steps, total - 1),
                                          excluded_clock=compile_seconds if t.compile else None,
                                          barrier=dist.barrier if dist.active else None)
    progress, stopper = Progress(total, "train"), EarlyStopper(t.early_stopping_patience, t.early_stopping_min_delta)
    on_step = step_hook(checked.method_name)  # a method's own per-step work (AdaLoRA's rank budget), or None
    loss_sum, since = torch.zeros((), device=device), 0
    model.train()
    started = time.perf_counter()
    meter.begin()
    for step, batch in enumerate(loader, start=1):
        samples, tokens = len(batch["labels"]), int(batch["attention_mask"].sum())  # on the CPU: no sync
        samples, tokens = dist.counted(step, samples, tokens)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(precision, device):
            loss = net(**batch).loss
        scaler.scale(dist.scaled_loss(loss, step)).backward()
        if t.max_grad_norm:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if on_step is not None:
            on_step(model, step, total)
        optimizer.zero_grad(set_to_none=True)
        loss_sum += dist.weighted_loss(loss.detach().float(), step)
        since += 1
        meter.step_done(samples, tokens)
        stats.steps, stats.samples, stats.tokens = step, stats.samples + samples, stats.tokens + tokens
        if step % t.log_every == 0 or step == total:
            mean = dist.sum(loss_sum / since).item()  # the only sync point inside the loop
            if not math.isfinite(mean):
                raise FloatingPointError(f"training loss became {mean} by step {step}")
            stats.loss_curve.append((step, mean))
            loss_sum.zero_()
            since = 0
            progress.update(step, loss=mean, samples_per_s=meter.samples_per_s_so_far())
            logger.log_train(step, {"train/loss": mean, "train/lr": scheduler.get_last_lr()[0],
                                    "train/samples_per_s": meter.samples_per_s_so_far(),
                                    "train/tokens_per_s": meter.tokens_per_s_so_far(), "train/tokens_seen": stats.tokens})
        if t.eval_every and step % t.eval_every == 0 and step < total:
            meter.pause()  # evaluation is not training time
            value, _, scores = evaluate(model, tokenizer, data, checked, device)
            stats.eval_curve.append((step, value))
            logger.log_eval(step, scores)
            model.train()
            meter.resume()
            stop = stopper.should_stop(value)
            progress.note(stopper.describe(checked.run.task.metric, step, total, value, stop))
            if stop:
                stats.stop_reason = "early_stopping"
                break
    meter.end()
    progress.close()
    stats.wall_s = time.perf_counter() - started


def make_schedule(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_steps``, then ``schedule`` (linear or cosine decay to 0 at
    ``total_steps``, or constant): the multipliers of transformers' ``get_scheduler`` for
    ``linear``, ``cosine`` and ``constant_with_warmup`` (``tests/test_budget.py`` holds them
    equal), computed here because importing ``transformers.optimization`` took 2.5 s of a sweep's
    first run."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: {', '.join(SCHEDULES[:-1])} or {SCHEDULES[-1]}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(lr_multiplier, schedule, warmup_steps, total_steps))


def lr_multiplier(schedule: str, warmup_steps: int, total_steps: int, step: int) -> float:
    """The learning rate's factor at optimizer step ``step`` (a module-level function, so a
    scheduler's state pickles)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


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

    def describe(self, metric: str, step: int, total: int, score: float, stopped: bool) -> str:
        """The line a periodic evaluation prints: its score, the best so far, and a stop if it is one."""
        line = f"[eval] step {step}/{total}: {metric}={score:.4f} (best {self.best:.4f})"
        if stopped:
            line += (f"\n[train] early stopping at step {step} of {total}: {metric} has not improved by more than "
                     f"{self.min_delta:g} in {self.misses} evaluation(s) (train.early_stopping_patience="
                     f"{self.patience}); the model as it is now is scored")
        return line


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer, data: TaskData, checked: Validated, device: torch.device,
             split: str | None = None) -> tuple[float, float, dict[str, float]]:
    """Scores the evaluation split (or the extra evaluation ``split``) in batches of similar lengths,
    longest first; returns ``(score, evaluation samples/s, every metric value)``."""
    dataset = data.eval if split is None else data.extra_evals[split]
    order = longest_first(dataset)  # each batch padded to its own length: about half the padding of the split's order
    loader = eval_loader(dataset.select(order), data, tokenizer, checked)
    model.eval()
    predictions, references = [], []
    progress = Progress(len(loader), "eval")
    compiling = compile_seconds if checked.run.train.compile else lambda: 0.0
    synchronize(device)
    started, compiled_before = time.perf_counter(), compiling()
    for i, batch in enumerate(loader, start=1):
        references += data.kind.references(batch.pop("labels"), tokenizer)
        predictions += data.kind.predict(model, {k: v.to(device) for k, v in batch.items()}, tokenizer)
        progress.update(i)
    synchronize(device)
    elapsed = time.perf_counter() - started - (compiling() - compiled_before)  # compiling is not evaluating
    progress.close()
    predictions, references = in_split_order(predictions, order), in_split_order(references, order)
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


def fill_measurements(record: RunRecord, stats: TrainStats, peak: MemoryPeak, checked: Validated,
                      prepended: int = 0) -> None:
    """The run's measurements into the record; ``prepended``: positions the method adds to every
    sample (prompt tuning's virtual tokens), whose compute the FLOPs per counted token then include."""
    if prepended and stats.tokens and record.train_flops_per_token:
        record.train_flops_per_token = round(
            record.train_flops_per_token * (stats.tokens + prepended * stats.samples) / stats.tokens)
    record.peak_rss_bytes = peak.peak_rss_bytes
    record.peak_gpu_mem_bytes, record.peak_gpu_reserved_bytes = peak.peak_gpu_mem_bytes, peak.peak_gpu_reserved_bytes
    record.train_samples_per_s, record.train_tokens_per_s = stats.meter.samples_per_s, stats.meter.tokens_per_s
    record.train_time_s = stats.wall_s
    if stats.compile_started_s is not None:
        record.compile_time_s = compile_seconds() - stats.compile_started_s
    record.final_train_loss = stats.loss_curve[-1][1] if stats.loss_curve else None
    # An early stop evaluated the model at its last step already: the final score replaces that point.
    record.eval_curve = [*(p for p in stats.eval_curve if p[0] != stats.steps), (stats.steps, record.score)]
    record.best_step, record.best_score = max(record.eval_curve, key=lambda point: point[1])
    record.device_name = device_name(torch.device(record.device))
    if record.train_tokens_per_s:
        record.achieved_flops_per_s = record.train_flops_per_token * record.train_tokens_per_s
        peak_flops_per_s = peak_flops(record.device_name, record.precision)
        record.mfu = record.achieved_flops_per_s / peak_flops_per_s if peak_flops_per_s else None


def fill_contention(record: RunRecord, busy: Contention) -> None:
    record.load_avg_1m_start, record.load_avg_1m_end, record.cpu_count = (
        busy.load_avg_1m_start, busy.load_avg_1m_end, busy.cpu_count)
    record.cpu_util, record.gpu_other_mem_bytes, record.gpu_util_pct = busy.cpu_util, busy.gpu_other_mem_bytes, busy.gpu_util_pct


def fill_answers(record: RunRecord, update: spectrum.Spectrum, forgot: forgetting.Forgetting) -> None:
    """The learned update's spectrum and the forgetting measures (both taken after the memory peak)."""
    record.update_effective_rank, record.update_stable_rank = update.effective_rank, update.stable_rank
    record.update_spectrum, record.update_spectrum_note = update.layers, update.note
    record.representation_drift, record.ref_loss_delta = forgot.representation_drift, forgot.ref_loss_delta
    record.forgetting_reference = forgot.reference


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
