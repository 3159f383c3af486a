"""Harness overhead: peftbench's training loop against a bare PyTorch loop on the same model and batches.

Both loops do the same work per step (collate a batch from the same planned batches, forward,
backward, gradient clipping, AdamW step, scheduler step) on identical models and the same sequence
of batches; peftbench adds its throughput meter,
loss bookkeeping, progress and, with ``--wandb offline``, a live offline wandb run per repeat (the
loss, learning rate, throughput and tokens seen every ``train.log_every`` steps, as a real run). Each is timed over the same steps after the same warm-up, several
times, alternating. Target: peftbench's throughput >= 0.97 of the bare loop's.

    python benchmarks/harness_overhead.py [--steps 60] [--repeats 3] [--method lora] [--device auto]
                                          [--wandb offline]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

from _common import compose_run


def bare_loop(model, loader, steps, lr, max_grad_norm, warmup, device, synchronize):
    import itertools

    import torch
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.06 * steps), steps)
    model.train()
    samples = 0
    epochs = itertools.chain.from_iterable(iter(loader) for _ in itertools.count())
    for step, batch in enumerate(itertools.islice(epochs, steps), start=1):
        if step == warmup + 1:
            synchronize(device)
            start = time.perf_counter()
        if step > warmup:
            samples += len(batch["labels"])
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="lora")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="model.name to use instead of the default benchmark's (a local folder)")
    parser.add_argument("--wandb", choices=("disabled", "offline"), default="disabled",
                        help="offline: peftbench's loop logs to a live offline wandb run, as a real run does")
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    import torch
    from omegaconf import OmegaConf

    from peftbench import runner
    from peftbench.live import start_logger
    from peftbench.measure import synchronize
    from peftbench.record import RunRecord
    from peftbench.tasks import load_task

    warmup = 5
    cfg, checked = compose_run([f"method={args.method}", f"train.steps={args.steps}", f"device={args.device}",
                                f"train.measure_warmup_steps={warmup}", f"wandb.mode={args.wandb}",
                                *([f"model.name={args.model}"] if args.model else [])])
    config = OmegaConf.to_container(cfg, resolve=True)
    wandb_dir = Path(tempfile.mkdtemp(prefix="harness-overhead-"))
    device = runner.pick_device(checked.run.device)
    runner.quiet_libraries(False)
    torch.manual_seed(0)
    base, tokenizer = runner.build_model(checked, device, RunRecord())
    data = load_task(checked.run.task, tokenizer, checked.run.train)

    ours, bare = [], []
    for _ in range(args.repeats):
        model = copy.deepcopy(base)
        loader = runner.train_loader(data, tokenizer, checked)  # peftbench's batches
        bare.append(bare_loop(model, loader, args.steps, checked.lr, checked.run.train.max_grad_norm, warmup,
                              device, synchronize))
        model = copy.deepcopy(base)
        stats = runner.TrainStats()
        record = RunRecord(method=args.method)
        logger = start_logger(record, config, wandb_dir)  # a NullLogger with wandb disabled
        runner.train(model, tokenizer, data, checked, device, stats, logger)
        record.close()
        logger.finish(record)
        ours.append(stats.meter.samples_per_s)
    print(f"model {checked.run.model.name}, method {args.method}, {args.steps} steps x "
          f"{checked.run.train.batch_size}, device {device}, {torch.get_num_threads()} threads, wandb {args.wandb}"
          f" (log_every {checked.run.train.log_every})")
    print(f"bare loop samples/s: {', '.join(f'{v:.1f}' for v in bare)}")
    print(f"peftbench samples/s: {', '.join(f'{v:.1f}' for v in ours)}")
    ratio = statistics.median(ours) / statistics.median(bare)
    print(f"ratio peftbench / bare (medians): {ratio:.3f}  (target >= 0.97: {'met' if ratio >= 0.97 else 'NOT met'})")


if __name__ == "__main__":
    main()
