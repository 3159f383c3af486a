"""Progress of training and evaluation: a bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """Shows step, loss and throughput; on a non-terminal prints a few lines per phase."""

    def __init__(self, total: int, phase: str) -> None:
        self.total, self.phase = total, phase
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self._next_line = 0
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=phase, unit="step", dynamic_ncols=True, leave=False)

    def update(self, step: int, **values: float | None) -> None:
        shown = {k: f"{v:.4g}" for k, v in values.items() if v is not None}
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(shown, refresh=True)
        elif step >= self._next_line or step == self.total:
            rate = step / max(time.perf_counter() - self.started, 1e-9)
            extras = " ".join(f"{k}={v}" for k, v in shown.items())
            print(f"[{self.phase}] step {step}/{self.total} {extras} ({rate:.1f} steps/s)", file=sys.stderr, flush=True)
            self._next_line = step + max(1, self.total // (10 if self.phase == "train" else 2))

    def note(self, text: str) -> None:
        """A line of its own (a score, a decision), above the bar on a terminal."""
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
