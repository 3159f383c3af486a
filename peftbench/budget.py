"""The training budget: which examples a run trains on, batch by batch, until the budget is spent.

A budget counts optimizer steps, epochs, samples (examples) or tokens (non-padding input tokens).
The batches are planned before training from the examples' token counts, so the learning-rate
schedule knows its length even for a token budget, and every method of a comparison trains on the
same examples in the same order: the order depends only on the seed, never on the method.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from peftbench.record import BUDGET_UNITS


class BatchPlan:
    """Example indices of every training batch, for ``DataLoader(batch_sampler=...)``.

    Each epoch is a fresh permutation of the training split drawn from a generator seeded with
    ``seed``, cut into batches of ``batch_size`` (the last batch of an epoch may be smaller).
    Epochs follow one another until the budget is spent; for a samples or tokens budget the last
    batch is cut at the first example that reaches it.

    Args:
        lengths: non-padding tokens of each training example (its ``input_ids`` length).
        batch_size: examples per batch.
        unit: what the budget counts: steps, epochs, samples or tokens.
        amount: how many of ``unit``.
        seed: seed of the shuffling.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, unit: str, amount: float, seed: int) -> None:
        if unit not in BUDGET_UNITS:
            raise ValueError(f"budget unit {unit!r} is not one of {', '.join(BUDGET_UNITS)}")
        if not lengths or (unit == "tokens" and not sum(lengths)):
            raise ValueError("the training split is empty")
        self.lengths, self.batch_size, self.unit, self.amount, self.seed = list(lengths), batch_size, unit, amount, seed
        self.steps = self._limit_steps() or sum(1 for _ in self)

    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __len__(self) -> int:
        return self.steps

    def _limit_steps(self) -> int | None:
        """The number of steps of a steps or epochs budget (None for samples and tokens)."""
        if self.unit == "steps":
            return int(self.amount)
        if self.unit == "epochs":
            return max(1, math.ceil(self.amount * self.batches_per_epoch()))
        return None

    def __iter__(self) -> Iterator[list[int]]:
        limit_steps = self._limit_steps()
        step = samples = tokens = 0
        for batch in self._endless():
            if self.unit == "samples":
                batch = batch[: int(self.amount) - samples]
            elif self.unit == "tokens":
                batch = self._cut_at_tokens(batch, int(self.amount) - tokens)
            yield batch
            step += 1
            samples += len(batch)
            tokens += sum(self.lengths[i] for i in batch)
            if (limit_steps is not None and step >= limit_steps) or (self.unit == "samples" and samples >= self.amount) \
                    or (self.unit == "tokens" and tokens >= self.amount):
                return

    def _cut_at_tokens(self, batch: list[int], left: int) -> list[int]:
        running = 0
        for n, index in enumerate(batch, start=1):
            running += self.lengths[index]
            if running >= left:
                return batch[:n]
        return batch

    def _endless(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        n = len(self.lengths)
        while True:
            order = torch.randperm(n, generator=generator).tolist()
            for start in range(0, n, self.batch_size):
                yield order[start : start + self.batch_size]
