"""The learned update's spectrum: singular values of ``W - W0`` for every weight matrix a run changed.

Which matrices are "the update" is read from the model and the method's registry entry, never from
the method's name:

- A method without a parameter prefix (full fine-tuning) trains the model's own parameters: its
  update matrices are its trainable 2-D parameters, the task head left out (a new head has no
  pretrained ``W0``). Their ``W0`` is written to a temporary folder before training, one tensor at a
  time, so the snapshot costs no memory during the run (the measured peaks stay the method's own),
  and read back at the end.
- A mergeable method with a prefix (LoRA, IA3...) leaves its base weights frozen beside its own
  trainable tensors. Its update is what merging adds to those frozen weights: the runner merges,
  reads ``merged - unmerged`` for each frozen 2-D weight held by a module that directly holds a
  trainable parameter (the wrapped layers), and unmerges. No snapshot is needed. On float16/bfloat16
  weights the merge rounds, and so does this difference.
- A method with a prefix that cannot merge but whose layers compute their own update (QLoRA: merging
  into 4-bit weights is refused, and its ``delta_weight()`` is ``s B A`` against the dequantized
  base) gives its update layer by layer.
- A method whose registry entry reads its own updates (``weight_updates``: the peft bridge, whose
  layers no prefix names) gives them itself: for peft, each adapted base weight after peft's merge of
  a copy of its layer, minus the weight, under the base weight's name (the name our LoRA's update has).
  Where it has no way to read a layer's update (peft's Poly cannot merge) that layer is left out and
  the spectrum's ``note`` says why.
- Other methods (adapters, prefix and prompt tuning) add modules instead of changing a weight
  matrix: they record nothing here.

Per matrix: an exact SVD when its smaller side is at most ``spectrum.exact_max_dim``, else a
randomized SVD (``torch.svd_lowrank``, ``top_k + 10`` columns, 4 power iterations) of its top
``top_k`` singular values; for those the effective rank is that of the top ``top_k`` values (a
lower bound) and the stable rank uses the exact Frobenius norm. Singular values below
``max(S) * max(m, n) * eps`` (numpy's ``matrix_rank`` tolerance) are rounding noise and are dropped.
"""

from __future__ import annotations

import base64
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from peftbench import methods
from peftbench.api import merge_method, unmerge_method
from peftbench.config import SpectrumConfig
from peftbench.methods.base import Conv1D
from peftbench.methods.targets import head_names

MAX_VECTOR_DIM = 8192  # singular vectors are stored only for matrices at most this wide (JSON size bound)


@dataclass
class Snapshot:
    """What must be kept before training to know ``W0`` at the end.

    Attributes:
        method: the method's registered name.
        names: the update matrices' parameter names.
        folder: where ``W0`` of each name was written (prefix-less methods), else None.
    """

    method: str
    names: list[str]
    folder: tempfile.TemporaryDirectory | None = None
    from_layers: bool = False  # a non-mergeable method's layers give their own update (delta_weight)
    from_method: bool = False  # the method's registry entry gives its updates (weight_updates)

    def base(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """``W0`` of ``name``, read back from the folder; shape and dtype of ``like``, on the CPU."""
        array = np.fromfile(Path(self.folder.name) / f"{name}.bin", dtype=np.float32)
        return torch.from_numpy(array).reshape(like.shape)

    def close(self) -> None:
        if self.folder is not None:
            self.folder.cleanup()
            self.folder = None


@dataclass
class Spectrum:
    """The update's spectrum of one run.

    Attributes:
        effective_rank: mean over matrices of the effective rank (None if nothing changed).
        stable_rank: mean over matrices of the stable rank.
        layers: one dict per matrix (name, shape, exact, effective_rank, stable_rank, singular_values,
            and ``right_vectors``: the top right singular vectors, ``in x k`` float16, base64).
        note: why a changed weight's update is missing from ``layers`` (``""``: none is).
    """

    effective_rank: float | None = None
    stable_rank: float | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


def update_matrix_names(model: nn.Module, method: str) -> list[str]:
    """Names of the 2-D parameters whose effective value training can change (see the module doc)."""
    spec = methods.get_method(method)
    heads = tuple(f"{h}." for h in head_names(model))
    if spec.param_prefix is None:
        return [n for n, p in model.named_parameters() if p.requires_grad and p.ndim == 2 and not n.startswith(heads)]
    if not spec.mergeable:  # QLoRA: its layers know their update (delta_weight), merging is refused
        return [f"{name}.weight" for name, module in model.named_modules()
                if callable(getattr(module, "delta_weight", None))
                and any(p.requires_grad for p in module.parameters(recurse=False))]
    names = []
    for module_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if any(p.requires_grad for p in own.values()):
            names += [f"{module_name}.{n}" if module_name else n for n, p in own.items()
                      if p.ndim == 2 and not p.requires_grad]
    return names


def snapshot(model: nn.Module, method: str, cfg: SpectrumConfig) -> Snapshot | None:
    """Before training: which matrices to watch, and ``W0`` of those only a snapshot can give."""
    if not cfg.enabled:
        return None
    if methods.get_method(method).weight_updates is not None:  # nothing to keep: W0 stays in the model
        return Snapshot(method, [], from_method=True)
    names = update_matrix_names(model, method)
    if not names:
        return None
    spec = methods.get_method(method)
    if spec.param_prefix is not None:
        return Snapshot(method, names, from_layers=not spec.mergeable)
    folder = tempfile.TemporaryDirectory(prefix="peftbench-w0-")
    params = dict(model.named_parameters(remove_duplicate=False))  # a tied lm_head keeps its own name
    for name in names:  # one tensor at a time: the snapshot never holds a second copy in memory
        params[name].detach().float().cpu().numpy().tofile(Path(folder.name) / f"{name}.bin")
    return Snapshot(method, names, folder)


@torch.no_grad()
def measure(model: nn.Module, snap: Snapshot | None, cfg: SpectrumConfig) -> Spectrum:
    """At the end of training: the spectrum of each watched matrix's update, and the means."""
    if snap is None:
        return Spectrum()
    note = ""
    try:
        if snap.from_method:  # already out x in, under the base weight's name
            deltas, note = methods.get_method(snap.method).weight_updates(model)
            layers = [layer_spectrum(name, delta, cfg) for name, delta in deltas]
        else:
            deltas = update_deltas(model, snap)
            layers = [layer_spectrum(name, _out_by_in(model, name, delta), cfg) for name, delta in deltas]
    finally:
        snap.close()
    ranks = [lay["effective_rank"] for lay in layers if lay["effective_rank"] is not None]
    stables = [lay["stable_rank"] for lay in layers if lay["stable_rank"] is not None]
    return Spectrum(effective_rank=sum(ranks) / len(ranks) if ranks else None,
                    stable_rank=sum(stables) / len(stables) if stables else None, layers=layers, note=note)


def update_deltas(model: nn.Module, snap: Snapshot) -> list[tuple[str, torch.Tensor]]:
    """``(name, W - W0)`` in float32 on the CPU, as stored, for each watched matrix."""
    if snap.from_layers:
        deltas = []
        for name in snap.names:
            layer = model.get_submodule(name.rpartition(".")[0])
            delta = layer.delta_weight().detach().float().cpu()
            deltas.append((name, delta.T if getattr(layer, "fan_in_fan_out", False) else delta))
        return deltas
    params = dict(model.named_parameters(remove_duplicate=False))  # a tied lm_head keeps its own name
    if snap.folder is not None:
        return [(n, params[n].detach().float().cpu() - snap.base(n, params[n])) for n in snap.names]
    before = {n: params[n].detach().float().cpu().clone() for n in snap.names}
    merge_method(model, snap.method)
    try:
        return [(n, params[n].detach().float().cpu() - before[n]) for n in snap.names]
    finally:
        unmerge_method(model, snap.method)


def _out_by_in(model: nn.Module, name: str, matrix: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``Conv1D`` stores its weight ``in x out``: turn it to ``out x in`` like every other."""
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return matrix.T if Conv1D and isinstance(owner, Conv1D) else matrix


def singular_values(matrix: torch.Tensor, cfg: SpectrumConfig) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(S, V, exact)``: singular values (descending) and right singular vectors (``in x k``) of an
    ``out x in`` matrix: all of them exactly, or the top ``top_k`` by a randomized SVD."""
    k = min(matrix.shape)
    if k <= cfg.exact_max_dim:
        if matrix.shape[0] < matrix.shape[1]:  # LAPACK is several times faster on the tall side
            v, s, _ = torch.linalg.svd(matrix.T, full_matrices=False)
            return s, v, True
        _, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return s, vh.T, True
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # svd_lowrank draws a random projection: keep the run's RNG stream untouched
    try:
        _, s, v = torch.svd_lowrank(matrix, q=min(cfg.top_k + 10, k), niter=4)
    finally:
        torch.random.set_rng_state(generator_state)
    return s[: cfg.top_k], v[:, : cfg.top_k], False


def effective_rank(s: torch.Tensor | np.ndarray) -> float | None:
    """Roy and Vetterli 2007: ``exp(H(p))`` with ``p = s / sum(s)``; None for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return None
    p = s[s > 0] / total
    return float(math.exp(-(p * np.log(p)).sum()))


def layer_spectrum(name: str, delta: torch.Tensor, cfg: SpectrumConfig) -> dict[str, Any]:
    """The spectrum summary of one ``out x in`` update (see :class:`Spectrum`'s ``layers``)."""
    s, v, exact = singular_values(delta, cfg)
    tolerance = (s[0] if len(s) else 0.0) * max(delta.shape) * torch.finfo(torch.float32).eps
    kept = s > tolerance
    s, v = s[kept], v[:, kept]
    frobenius_sq = float(delta.double().pow(2).sum())
    layer: dict[str, Any] = {
        "name": name, "shape": list(delta.shape), "exact": exact,
        "effective_rank": effective_rank(s.numpy()),
        "stable_rank": frobenius_sq / float(s[0]) ** 2 if len(s) else None,
        "singular_values": [float(f"{x:.6g}") for x in s[: cfg.top_k].tolist()],
    }
    n_vectors = min(cfg.vectors, v.shape[1])
    if n_vectors and delta.shape[1] <= MAX_VECTOR_DIM:
        layer["right_vectors"] = encode_vectors(v[:, :n_vectors])
    return layer


def encode_vectors(v: torch.Tensor) -> dict[str, Any]:
    """``in x k`` vectors as float16 bytes in base64 (row-major), with their shape."""
    data = v.to(torch.float16).contiguous().numpy().tobytes()
    return {"shape": list(v.shape), "float16_base64": base64.b64encode(data).decode("ascii")}
