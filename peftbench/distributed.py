"""One run on several processes with ``torch.distributed``: data parallel (DDP) or sharded (FSDP2).

Started by ``torchrun --nproc_per_node=N -m peftbench ...`` (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``) or by a SLURM step of several tasks (``srun``, as
``hydra/launcher=slurm hydra.launcher.tasks_per_node=N`` does: ``SLURM_STEP_NUM_TASKS``,
``SLURM_PROCID``, ``SLURM_LOCALID``). Anything else is one process, and every function here is then
a no-op, so the runner has no special case.

The semantics, the same at any world size:

- ``train.batch_size`` is the global batch. The run's seeded :class:`~peftbench.budget.BatchPlan` is
  drawn identically on every rank and each planned batch is cut into ``world_size`` contiguous
  shares (``batch_size / world_size`` each; a batch size that does not divide is refused). A budget
  in steps, samples or tokens therefore trains on the same examples in the same order as one process.
- Each rank's loss is weighted by its share of the batch, so the all-reduced gradient (DDP and FSDP
  average over ranks) is the gradient of the mean over the whole batch, as in one process; the
  logged loss is the same weighted sum over ranks.
- Throughput counts all ranks: the timed window opens and closes at barriers, samples and tokens are
  summed over ranks and divided by the longest rank's window. Peak memory is the maximum over ranks;
  every rank's own figures go to the run's JSON (``per_rank``).
- The final score, the inference latency, merge/unmerge and the checkpoint size are computed once,
  on rank 0, on the whole model (DDP's replica, or FSDP's state gathered into a plain copy). One row
  and one wandb run, written by rank 0.
- A failure on any rank is published through the process group's store; rank 0 records the run as
  failed with that rank's error and every rank exits nonzero.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from peftbench.errors import ConfigError
from peftbench.measure import MemoryPeak, ThroughputMeter

# Rank 0 alone scores the whole model after training while the others wait in a collective: long
# enough for a large evaluation split, still bounded.
TIMEOUT = timedelta(hours=2)
_RUNS = itertools.count()  # runs this process took part in: every rank counts the same sequence


def world_from_env(env: dict[str, str] | None = None) -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` that torchrun or a SLURM step gave this process (1, 0, 0
    when neither did). A SLURM batch script's own ``SLURM_NTASKS`` does not count: only a step
    started by ``srun`` with several tasks runs one process per rank."""
    env = os.environ if env is None else env
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return int(env["WORLD_SIZE"]), int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    if int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
        return int(env["SLURM_STEP_NUM_TASKS"]), int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0"))
    return 1, 0, 0


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[03-05,9],cpu1`` gives ``gpu03``)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def _slurm_rendezvous(env: dict[str, str]) -> None:
    """``MASTER_ADDR``/``MASTER_PORT`` for a SLURM step, unless the user set them: the step's first
    node, and a port derived from the job id (all tasks of the job agree without talking)."""
    if "MASTER_ADDR" not in env:
        env["MASTER_ADDR"] = first_slurm_host(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))


@dataclass
class Distributed:
    """This process's place in the run, and the few collective operations the runner needs.

    Attributes:
        world_size: processes training the run together.
        rank: this process's index among them (0 records the run).
        local_rank: its index on this machine (the CUDA device it uses).
        strategy: ``single`` (one process), ``ddp`` or ``fsdp``.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    strategy: str = "single"
    key: str = "peftbench/0"  # this run's keys in the process group's store
    _batches: list[list[int]] = field(default_factory=list, repr=False)
    _weights: list[float] = field(default_factory=list, repr=False)
    _once: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _finished: bool = field(default=False, repr=False)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The rank's own CUDA device (``cuda:<local_rank>``) when the run asked for CUDA."""
        if self.active and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    # --- the batches -------------------------------------------------------------------------
    def shard(self, plan) -> Any:
        """The batch sampler of this rank: its contiguous share of every planned (global) batch.

        A batch smaller than the world (the last one of a samples or tokens budget) leaves some
        ranks no example: they take the batch's first example with weight 0, so every rank still
        joins the step's gradient reduction and the result is the one-process gradient.
        """
        if not self.active:
            return plan
        self._batches, self._weights = [], []
        for batch in plan:
            n, share = len(batch), len(batch) // self.world_size
            extra = len(batch) % self.world_size
            start = self.rank * share + min(self.rank, extra)
            mine = batch[start : start + share + (self.rank < extra)]
            self._batches.append(mine or batch[:1])
            self._weights.append(len(mine) / n)
        return _Shares(self._batches)

    def counted(self, step: int, samples: int, tokens: int) -> tuple[int, int]:
        """What a step's batch adds to the budget's count: nothing for a weight-0 stand-in example."""
        if self.active and self._weights[step - 1] == 0:
            return 0, 0
        return samples, tokens

    def scaled_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """The loss to back-propagate: weighted by this rank's share of the batch, times the world size
        (DDP and FSDP average gradients over ranks)."""
        if not self.active:
            return loss
        return loss * (self._weights[step - 1] * self.world_size)

    def weighted_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """This rank's part of the whole batch's mean loss (summed over ranks by :meth:`sum`)."""
        return loss * self._weights[step - 1] if self.active else loss

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over ranks (a scalar tensor on the run's device)."""
        if self.active:
            value = value.clone()
            torch.distributed.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    # --- the model ---------------------------------------------------------------------------
    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to train: ``model`` itself (one process), a DDP wrapper around it, or ``model``
        sharded in place with FSDP2 (``fully_shard`` on every transformer block, then the root).

        DDP reduces only parameters with ``requires_grad`` (a method's frozen base is never synced).
        FSDP2 shards each parameter on its own (no flat parameter), so a block that mixes a frozen
        base weight and trainable method tensors is one unit: frozen ones are all-gathered for the
        forward and get no gradient; trainable ones are reduce-scattered.
        """
        if not self.active:
            return model
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (self.world_size,))
        for block in transformer_blocks(model):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def whole_model(self, model: nn.Module, rebuild: Callable[[], nn.Module]) -> nn.Module | None:
        """The trained model as one plain module on rank 0 (None on the others), for the stages that
        run once: DDP's replica as it is; FSDP's full state gathered (on the CPU, to rank 0) and
        loaded into a fresh copy from ``rebuild`` (the model built again, method applied).
        Collective: every rank calls it."""
        if not self.active:
            return model
        if self.strategy == "ddp":
            return model if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        plain = rebuild()
        plain.load_state_dict(state)
        return plain

    # --- the measurements --------------------------------------------------------------------
    def combine(self, peak: MemoryPeak, meter: ThroughputMeter | None, counts: list[int]) -> tuple[
            MemoryPeak, list[int], list[dict[str, Any]]]:
        """Every rank's figures to all: the peak memory as the maximum over ranks, ``meter``'s
        samples and tokens summed over ranks over the longest rank's window (in place), ``counts``
        summed; with the per-rank figures, in rank order. Collective: every rank calls it."""
        if not self.active:
            return peak, counts, []
        mine = {"rank": self.rank, "peak_rss_bytes": peak.peak_rss_bytes,
                "peak_gpu_mem_bytes": peak.peak_gpu_mem_bytes, "peak_gpu_reserved_bytes": peak.peak_gpu_reserved_bytes,
                "train_samples_per_s": meter.samples_per_s if meter else None,
                "train_tokens_per_s": meter.tokens_per_s if meter else None,
                "train_window_s": meter.elapsed_s if meter else None,
                "timed": (meter.samples, meter.tokens) if meter else (0, 0), "counts": counts}
        everyone: list[dict[str, Any]] = [{} for _ in range(self.world_size)]
        torch.distributed.all_gather_object(everyone, mine)

        def biggest(key: str) -> int | None:
            values = [r[key] for r in everyone if r[key] is not None]
            return max(values) if values else None

        total = MemoryPeak(peak_rss_bytes=biggest("peak_rss_bytes") or 0,
                           peak_gpu_mem_bytes=biggest("peak_gpu_mem_bytes"),
                           peak_gpu_reserved_bytes=biggest("peak_gpu_reserved_bytes"))
        if meter is not None:
            meter.samples = sum(r["timed"][0] for r in everyone)
            meter.tokens = sum(r["timed"][1] for r in everyone)
            meter.elapsed_s = max(r["train_window_s"] for r in everyone)
        summed = [sum(r["counts"][i] for r in everyone) for i in range(len(counts))]
        for r in everyone:
            del r["counts"], r["timed"]
        return total, summed, everyone

    # --- failures ----------------------------------------------------------------------------
    def finish_once(self, finish: Callable[[], None]) -> bool:
        """Runs ``finish`` (recording the run) unless it ran already, from any thread; a second caller
        waits until the first is done. True if this call ran it."""
        with self._once:
            if self._finished:
                return False
            self._finished = True
            finish()
        return True

    def watch_for_failures(self, fail: Callable[[str], None], finish: Callable[[], None],
                           interval_s: float = 0.2) -> None:
        """Rank 0: a thread that waits for another rank's published failure, then marks the record
        (``fail(error)``), records the run (``finish``) and ends the process with status 1: rank 0
        may be blocked in a collective that the failed rank will never join."""
        if not (self.active and self.is_main):
            return
        store = _store()

        def watch() -> None:
            while not self._finished:
                try:
                    failed = f"{self.key}/failed"
                    error = store.get(failed).decode() if store.check([failed]) else None
                except Exception:  # the store is gone: the run is ending anyway
                    return
                if error:
                    if self.finish_once(lambda error=error: (fail(error), finish())):
                        os._exit(1)
                    return
                time.sleep(interval_s)

        threading.Thread(target=watch, name="peftbench-failure-watch", daemon=True).start()

    def failed(self, record) -> None:
        """After ``record.fail``: another rank tells rank 0 and waits for the row; rank 0 takes the
        error of a rank that failed first (its own may be the echo: a collective whose peer died)."""
        if self.is_main:
            remote = self.other_rank_failure()
            if remote:
                record.fail(RemoteRankError(remote))
        else:
            self.publish_failure(record.error)

    def share(self, record) -> None:
        """Rank 0's finished record to every rank, so all return the same run (score, run_id)."""
        if not self.active:
            return
        payload = [dict(vars(record)) if self.is_main else None]
        torch.distributed.broadcast_object_list(payload, src=0)
        if not self.is_main:
            vars(record).update(payload[0])

    def publish_failure(self, error: str, wait_s: float = 60.0) -> None:
        """A failed rank other than 0 tells rank 0 (``rank <r>: <error>``) and waits until the run is
        recorded (torchrun stops every rank as soon as one exits, which could be before rank 0
        wrote the row)."""
        if not self.active or self.is_main:
            return
        try:
            store = _store()
            store.compare_set(f"{self.key}/failed", "", f"rank {self.rank}: {error}")  # the first failure wins
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and not store.check([f"{self.key}/recorded"]):
                time.sleep(0.1)
        except Exception:  # rank 0 (which hosts the store) has gone: nothing left to tell
            return

    def other_rank_failure(self) -> str | None:
        """On rank 0: another rank's published error (its own failure may be only the echo of it:
        a collective whose peer died)."""
        if not self.active:
            return None
        try:
            store = _store()
            failed = f"{self.key}/failed"
            return store.get(failed).decode() if store.check([failed]) else None
        except Exception:
            return None

    def mark_recorded(self) -> None:
        if self.active and self.is_main:
            try:
                _store().set(f"{self.key}/recorded", "1")
            except Exception:
                pass

    def close(self, status: str) -> None:
        """The end of the run. A run that did not succeed ends the process with status 1 on every
        rank: the ranks may be at different points of the run, and no later collective (the next
        job of a sweep) could match. The process group itself lives until the process exits, so
        the jobs of a sweep under torchrun share it."""
        if self.active and status != "success":
            sys.exit(1)


class _Shares:
    """A batch sampler over precomputed per-rank batches."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


class RemoteRankError(RuntimeError):
    """Another rank of the run failed; the message is its error."""


def _store():
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one: modules whose class transformers lists in the
    model's ``_no_split_modules`` (``BertLayer``, ``LlamaDecoderLayer``), else the children of the
    longest ``nn.ModuleList``. Outermost first; a block inside another block is not listed."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names and m is not model]
    if not blocks:
        lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
        blocks = list(max(lists, key=len)) if lists else []
    inside = {id(sub) for b in blocks for sub in b.modules() if sub is not b}
    return [b for b in blocks if id(b) not in inside]


def start(strategy: str, batch_size: int, device: torch.device) -> Distributed:
    """Joins the run's process group when torchrun or a SLURM step started several processes; the
    one-process context otherwise. NCCL on CUDA, gloo on the CPU.

    Raises:
        ConfigError: ``train.batch_size`` does not divide over the processes (checked before any
            work: the per-rank batch is ``batch_size / world_size``).
    """
    world, rank, local = world_from_env()
    if world == 1:
        return Distributed()
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size={batch_size} does not divide over {world} processes: train.batch_size is the "
            f"global batch, each rank trains on batch_size / world_size examples. Use a multiple of {world}, "
            f"for example train.batch_size={max(world, batch_size // world * world)}"
        )
    if "WORLD_SIZE" not in os.environ:  # a SLURM step: torch's env:// rendezvous reads these
        _slurm_rendezvous(os.environ)  # type: ignore[arg-type]
        os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(local))
    context = Distributed(world_size=world, rank=rank, local_rank=local, strategy=strategy,
                          key=f"peftbench/{next(_RUNS)}")
    device = context.device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(torch.distributed.destroy_process_group)
    return context
