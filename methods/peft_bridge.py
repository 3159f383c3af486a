"""``method=peft``: any method Hugging Face peft implements, injected into the model the harness built.

``method.peft_type`` names a ``peft.PeftType`` (case-insensitive: ``loha``, ``LoKr``...) and
``method.options`` holds the fields of that type's peft config class (``r``, ``alpha``,
``target_modules``...). :func:`apply` builds that config and hands it to the type's peft tuner class,
which injects its layers into the model in place and freezes everything else: this is exactly what
``peft.inject_adapter_in_model`` does (the model stays the harness's, never a ``PeftModel``), except
that the tuner object is kept, because a few types do work outside their layers (AdaLoRA's rank
allocation every step, and its orthogonality penalty on the loss, both below).

What the harness needs from a method, the bridge takes from peft:

* the state a checkpoint holds: what peft's layers hold beside their base layer, the selection
  ``peft.get_peft_model_state_dict`` makes, under the model's own parameter names (:func:`state_dict`);
* merging: every injected ``BaseTunerLayer``'s own ``merge``/``unmerge``; a type whose layers have none
  (Poly) is not mergeable and is timed unmerged only (:func:`can_merge`);
* per-step work: the tuner's ``update_and_allocate`` for AdaLoRA (:func:`on_step`), whose
  ``total_step`` the run's budget fills in when ``method.options.total_step`` is not set;
* the row label: ``peft:<type>`` (:func:`label`), its rank (``options.r``, AdaLoRA's ``init_r``; none for
  types without one: :func:`rank`) and its settings as peft used them (:func:`used_settings`: peft's layers
  may adjust a value to a layer's width, warning only);
* the learned update ``W - W0`` of each adapted weight, for the spectrum columns: peft's ``merge`` of a
  copy of each layer (:func:`weight_updates`).

Refused before the model loads, with the reason and what to use instead: an unknown type (the message
lists the types the installed peft offers), the prompt-learning types (prompt, prefix, p-tuning,
multitask prompt tuning, CPT, cartridges: peft can only run them by wrapping the model; use our own
``method=prefix`` or ``method=prompt``), the types whose tuner keeps state shared across layers
(VeRA, VB-LoRA, FRoD, PVeRA, UniLoRA, TinyLoRA: ``inject_adapter_in_model`` refuses them; for VeRA use
``method=vera``), the types that wrap other adapters (adaption prompt, X-LoRA, Shadow), and peft
itself when it is not installed (``pip install "peftbench[peft]"``).

Default targets: ``methods/targets.yaml``, key ``peft_<type>`` for one type, else ``peft``, by
model family; for a family with neither, peft's own per-architecture defaults.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .base import Conv1D, MethodConfigError, MethodSpec, is_positive_int
from .targets import default_targets

ADAPTER = "default"  # peft's adapter name; the only adapter the bridge injects
INSTALL = 'pip install "peftbench[peft]"'

# Fields of every peft config that the bridge sets itself, or that mean nothing without a PeftModel.
BRIDGE_FIELDS = ("peft_type", "task_type", "auto_mapping", "peft_version", "base_model_name_or_path",
                 "revision", "inference_mode")
# The harness keeps the task head trainable itself; peft's copy of it would train (and count) twice.
REFUSED_OPTIONS = {"modules_to_save": "the harness trains the task head itself (methods/targets.yaml "
                                      "`heads`); peft's modules_to_save would add a second, trainable copy"}

# Each type's rank is its config's `r`, except where named here; types whose `r` is no rank of the
# update have none (OFT's `r` counts its orthogonal blocks; SHiRA's sizes a sparse update, r (m + n) entries).
RANK_OPTIONS = {"ADALORA": "init_r"}  # AdaLoRA's matrices are built at init_r (its `r` is unused); target_r is a mean
NO_RANK = ("OFT", "SHIRA")

# Types whose peft tuner does work outside its layers, and the options the run fills in.
STEP_METHODS = {"ADALORA": "update_and_allocate"}  # tuner method called after every optimizer step
RUN_LENGTH_OPTIONS = {"ADALORA": "total_step"}  # option filled from the run's budget when not given


def import_peft():
    """The installed ``peft`` module, or a refusal that says how to install it."""
    try:
        import peft
    except ImportError:
        raise MethodConfigError(
            f"method=peft needs Hugging Face peft, which is not installed here: {INSTALL} (or pip install peft)"
        ) from None
    return peft


def type_refusal(peft, peft_type) -> str | None:
    """Why the bridge cannot inject ``peft_type`` (a ``peft.PeftType``), or None if it can."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.tuners_utils import BaseTuner

    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    tuner_cls = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type)
    if config_cls is not None and issubclass(config_cls, peft.PromptLearningConfig):
        return ("it is a prompt-learning type, which peft runs only by wrapping the model in a PeftModel; "
                "use peftbench's own method=prefix (prefix tuning) or method=prompt (prompt tuning)")
    if getattr(tuner_cls, "uses_shared_state", False):
        instead = "; use peftbench's own method=vera" if peft_type.value == "VERA" else ""
        return ("its peft tuner keeps state shared across layers outside the model, which peft's "
                f"inject_adapter_in_model refuses{instead}")
    if (config_cls is None or not isinstance(tuner_cls, type) or not issubclass(tuner_cls, BaseTuner)
            or peft_type.value in ("ADAPTION_PROMPT", "XLORA", "SHADOW")):
        return "peft cannot inject it into a model it does not wrap (it wraps the model or other adapters)"
    return None


def injectable_types(peft) -> list[str]:
    """The lower-case names of the types of the installed peft that the bridge can inject."""
    return sorted(t.value.lower() for t in peft.PeftType if type_refusal(peft, t) is None)


@dataclass
class PeftBridgeConfig:
    """Settings of the bridge.

    Attributes:
        peft_type: a ``peft.PeftType`` of the installed peft, any case (``LoHa``, ``lokr``, ``oft``...),
            kept in lower case (``loha``): the spelling the run's key and row hold.
        options: fields of that type's peft config class (``peft.LoHaConfig``...), passed as given;
            ``target_modules`` unset takes the family's defaults (``methods/targets.yaml``).
    """

    peft_type: str = "lora"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.options = dict(self.options or {})
        build_peft_config(self.peft_type, self.options)  # refuses a bad type or option now, before any work
        self.peft_type = str(self.peft_type).lower()  # one spelling: LOHA and loha are one run (run_key, row)

    @property
    def type_name(self) -> str:
        return str(self.peft_type).upper()


def build_peft_config(peft_type: str, options: Mapping[str, Any], target_modules: Any = None):
    """The peft config object for ``peft_type`` with ``options`` (``target_modules`` filled in where
    given and the options leave it unset).

    Raises:
        MethodConfigError: peft missing, an unknown or non-injectable type, an unknown or refused
            option, or a value peft's config refuses; each names the key and what is allowed.
    """
    peft = import_peft()
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    offered = injectable_types(peft)
    name = str(peft_type).upper()
    if name not in peft.PeftType.__members__:
        raise MethodConfigError(
            f"method.peft_type={peft_type!r} is not a type of the installed peft {peft.__version__}. The types "
            f"method=peft can run: {', '.join(offered)} (any case; recipes for some: method=loha, lokr, adalora, "
            "oft, boft, fourierft)."
        )
    kind = peft.PeftType[name]
    refusal = type_refusal(peft, kind)
    if refusal:
        raise MethodConfigError(
            f"method.peft_type={peft_type!r}: method=peft cannot run it: {refusal}. The types it can run: "
            f"{', '.join(offered)}."
        )
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[kind]
    allowed = [f.name for f in dataclasses.fields(config_cls) if f.name not in (*BRIDGE_FIELDS, *REFUSED_OPTIONS)]
    for key in options:
        if key in REFUSED_OPTIONS:
            raise MethodConfigError(f"method.options.{key} is not allowed with method=peft: {REFUSED_OPTIONS[key]}.")
        if key not in allowed:
            raise MethodConfigError(
                f"method.options.{key} is not a field of peft's {config_cls.__name__} ({name.lower()}); its "
                f"fields are: {', '.join(allowed)}."
            )
    rank_key, default = rank_field(name) or (None, None)
    given_rank = options.get(rank_key) if rank_key else None
    if given_rank is not None and not is_positive_int(given_rank):
        raise MethodConfigError(
            f"method.options.{rank_key}={given_rank!r}: it is the rank of peft's {config_cls.__name__} "
            f"({name.lower()}) and must be a positive integer, such as 2, 4, 8 or 16 (peft's default: {default})."
        )
    kwargs = dict(options)
    if kwargs.get("target_modules") is None and target_modules is not None:
        kwargs["target_modules"] = target_modules
    run_length = RUN_LENGTH_OPTIONS.get(name)
    if run_length and kwargs.get(run_length) is None:
        # A stand-in that passes peft's schedule check; on_step puts the run's real length in at step 1.
        kwargs[run_length] = int(kwargs.get("tinit", 0) or 0) + int(kwargs.get("tfinal", 0) or 0) + 1
    try:
        return config_cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise MethodConfigError(f"method.options for peft type {name.lower()}: peft's {config_cls.__name__} "
                                f"refused them: {err}") from None


@dataclass
class Injected:
    """What the bridge keeps on a model it injected into (as ``model.peft_bridge``; not a module).

    Attributes:
        type_name: the peft type, upper case (``LOHA``).
        tuner: peft's tuner object, whose ``model`` is the injected model itself.
        fill_run_length: the run's budget still has to fill the type's run-length option.
    """

    type_name: str
    tuner: Any
    fill_run_length: bool = False


def injected(model: nn.Module) -> Injected:
    state = getattr(model, "peft_bridge", None)
    if not isinstance(state, Injected):
        raise MethodConfigError("method=peft: this model holds no adapter injected by the bridge")
    return state


def family_targets(model: nn.Module, type_name: str) -> Any:
    """``targets.yaml``'s ``peft_<type>`` or ``peft`` entry for ``model``'s family, or None (peft's own)."""
    for key in (f"peft_{type_name.lower()}", "peft"):
        try:
            return default_targets(model, key)
        except MethodConfigError:
            continue
    return None


def apply(model: nn.Module, config: PeftBridgeConfig) -> nn.Module:
    """Injects ``config``'s peft adapter into ``model`` in place through peft's own tuner class (as
    ``peft.inject_adapter_in_model`` does) and freezes everything else; returns ``model``."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if hasattr(model, "peft_config") or hasattr(model, "peft_bridge"):
        raise MethodConfigError("method=peft: this model already holds a peft adapter")
    peft_config = build_peft_config(config.peft_type, config.options, family_targets(model, config.type_name))
    try:
        tuner = PEFT_TYPE_TO_TUNER_MAPPING[peft_config.peft_type](model, peft_config, adapter_name=ADAPTER)
    except (TypeError, ValueError) as err:  # e.g. a target peft's type cannot wrap (GPT-2's Conv1D for LoHa)
        raise MethodConfigError(
            f"method=peft, peft_type={config.type_name.lower()}: peft could not inject it into "
            f"{type(model).__name__}: {err} ({injection_hint(str(err), peft_config)})"
        ) from None
    run_length = RUN_LENGTH_OPTIONS.get(config.type_name)
    model.peft_bridge = Injected(config.type_name, tuner, bool(run_length) and config.options.get(run_length) is None)
    if config.type_name == "ADALORA":
        model.register_forward_hook(add_orthogonal_penalty)
    return model


def injection_hint(message: str, peft_config: Any) -> str:
    """What to change after peft refused to inject: the options peft's message names in backticks
    (`r` (64) must be less than or equal to in_features (32)), else the targets."""
    fields = {f.name for f in dataclasses.fields(peft_config)} - set(BRIDGE_FIELDS)
    named = [key for key in dict.fromkeys(re.findall(r"`(\w+)`", message)) if key in fields]
    if named:
        return "set " + " or ".join(f"method.options.{key} (now {getattr(peft_config, key)!r})" for key in named) + \
            " to a value it accepts for these layers"
    return "set method.options.target_modules to modules it can wrap"


def add_orthogonal_penalty(module: nn.Module, args: Any, outputs: Any) -> Any:
    """AdaLoRA's loss term (Zhang et al. 2023, eq. 4), which peft adds in ``AdaLoraModel.forward``:
    ``orth_reg_weight`` times the mean over the ``lora_A``/``lora_B`` matrices of ``||P P^T - I||_F``
    (``A A^T`` for ``A: r x in``, ``B^T B`` for ``B: out x r``), added to ``outputs.loss`` when it is set."""
    loss = getattr(outputs, "loss", None)
    if not isinstance(loss, torch.Tensor):
        return outputs
    tuner = injected(module).tuner
    weight = tuner.peft_config[ADAPTER].orth_reg_weight
    penalties = []
    for name, param in module.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and ADAPTER in name:
            gram = param @ param.T if "lora_A" in name else param.T @ param
            penalties.append(torch.linalg.matrix_norm(gram - torch.eye(*gram.shape, out=torch.empty_like(gram))))
    if penalties:
        outputs.loss = loss + weight * torch.stack(penalties).mean()
    return outputs


def on_step(model: nn.Module, step: int, total_steps: int) -> None:
    """The tuner's per-step work after optimizer step ``step`` (1-based) of ``total_steps``: AdaLoRA's
    ``update_and_allocate`` (importance scores from this step's gradients, then the rank budget)."""
    state = injected(model)
    method = STEP_METHODS.get(state.type_name)
    if method is None:
        return
    if state.fill_run_length:
        fill_run_length(state, total_steps)
    getattr(state.tuner, method)(step)


def fill_run_length(state: Injected, total_steps: int) -> None:
    """Puts the run's budget (optimizer steps) into AdaLoRA's ``total_step``, once."""
    config = state.tuner.peft_config[ADAPTER]
    if not config.tinit < total_steps - config.tfinal:
        raise MethodConfigError(
            f"method.options.tinit={config.tinit} and tfinal={config.tfinal} leave AdaLoRA no budgeting phase in "
            f"a run of {total_steps} optimizer steps: make tinit + tfinal smaller than {total_steps}"
        )
    config.total_step = total_steps
    state.tuner.rankallocator.set_total_step(total_steps)
    state.fill_run_length = False


def tuner_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def can_merge(model: nn.Module) -> bool:
    """True if every injected peft layer implements ``merge`` and ``unmerge`` (peft's base raises)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = tuner_layers(model)
    return bool(layers) and all(
        type(m).merge is not BaseTunerLayer.merge and type(m).unmerge is not BaseTunerLayer.unmerge for m in layers
    )


def merge(model: nn.Module) -> nn.Module:
    for layer in tuner_layers(model):
        if not layer.merged:
            layer.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for layer in tuner_layers(model):
        if layer.merged:
            layer.unmerge()
    return model


@torch.no_grad()
def weight_updates(model: nn.Module) -> tuple[list[tuple[str, torch.Tensor]], str]:
    """The learned update ``W - W0`` of each base weight an injected peft layer adapts, and why any has
    none.

    ``W`` is that weight after peft's own ``merge`` of a copy of the layer, one layer at a time (the
    model is left as it is, and there is no unmerge to round): the same update whatever the type does
    (LoRA's ``s B A``, LoHa's Hadamard product, OFT's ``R W0 - W0``), and the number our own
    ``method=lora`` gives for the same weights. Each update is ``out x in`` (a GPT-2 ``Conv1D``'s
    ``in x out`` turned), float32 on the CPU, under the base weight's own name (``...query.weight``,
    the name our LoRA keeps), so spectra of the bridge and of our methods compare layer by layer.

    Returns:
        ``([(name, delta)], why_missing)``: ``why_missing`` names the layers peft gives no way to fold
        (no ``merge``: Poly), whose updates are left out; ``""`` when none is.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    updates, unmergeable = [], []
    for name, layer in model.named_modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        weight = getattr(layer.get_base_layer(), "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            continue
        if type(layer).merge is BaseTunerLayer.merge:
            unmergeable.append(name)
            continue
        merged = copy.deepcopy(layer)
        merged.merge()
        delta = merged.get_base_layer().weight.detach().float().cpu() - weight.detach().float().cpu()
        del merged
        updates.append((f"{name}.weight", delta.T if Conv1D and isinstance(layer.get_base_layer(), Conv1D) else delta))
    why = ""
    if unmergeable:
        kind = injected(model).type_name.lower() if isinstance(getattr(model, "peft_bridge", None), Injected) else "peft"
        why = (f"the spectrum leaves out {len(unmergeable)} of {len(unmergeable) + len(updates)} adapted weights "
               f"({unmergeable[0]}...): peft's {kind} layers have no merge (nor get_delta_weight), so peft gives no "
               "way to read their update W - W0")
    return updates, why


def state_dict(model: nn.Module) -> dict[str, Any]:
    """The adapter's entries of ``model.state_dict()``, under the model's own names: every entry of an
    injected peft layer outside its ``base_layer``. That is the selection peft's own
    ``get_peft_model_state_dict`` makes for the default tuner (``BaseTuner._get_adapter_state_dict``), kept
    with the adapter name so it loads back with ``model.load_state_dict(..., strict=False)``. Two
    differences: AdaLoRA's ``ranknum`` (one number per layer) is kept, and AdaLoRA's matrices keep their
    full initial rank with the pruned entries at zero, where peft's saved state cuts them to the ranks
    left (peft's resize needs a ``PeftModel``'s key names)."""
    layers = set(tuner_layers(model))
    names = [name for name, module in model.named_modules() if module in layers]
    inside = tuple(f"{name}." for name in names)
    base = tuple(f"{name}.base_layer." for name in names)
    return {k: v for k, v in model.state_dict().items() if k.startswith(inside) and not k.startswith(base)}


def rank_field(type_name: str) -> tuple[str, Any] | None:
    """``(option, peft's default)`` of peft type ``type_name`` (upper case): the option that holds its rank
    (``r``, AdaLoRA's ``init_r``), or None for a type without one."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft = import_peft()
    if type_name in NO_RANK or type_name not in peft.PeftType.__members__:
        return None
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft.PeftType[type_name])
    option = RANK_OPTIONS.get(type_name, "r")
    found = [f for f in dataclasses.fields(config_cls) if f.name == option] if config_cls is not None else []
    return (option, found[0].default) if found else None


def rank(settings: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``("options.r", value)`` for a type with a rank: the option as given, else peft's default for it
    (the ``rank`` column); None for a type without one (OFT, IA3, FourierFT...)."""
    try:
        found = rank_field(str(settings.get("peft_type", "")).upper())
    except MethodConfigError:  # peft is not installed: the run is refused, it has no rank
        return None
    if found is None:
        return None
    option, default = found
    return f"options.{option}", (settings.get("options") or {}).get(option, default)


def used_settings(model: nn.Module) -> dict[str, Any]:
    """``{"peft_type", "options"}`` as peft uses them in ``model``: every field of the built peft config
    (sets as sorted lists), where peft's layers keep their own value of a field (``r``,
    ``oft_block_size``, ``lora_alpha``: what ``update_layer`` used, possibly adjusted to the layer's
    width with only a warning) that value, or the sorted distinct values where the layers differ."""
    state = injected(model)
    config = state.tuner.peft_config[ADAPTER]
    layers = tuner_layers(model)
    options = {}
    for f in dataclasses.fields(config):
        if f.name in BRIDGE_FIELDS:
            continue
        per_layer = [v[ADAPTER] for v in (getattr(m, f.name, None) for m in layers)
                     if isinstance(v, dict) and ADAPTER in v]
        value = getattr(config, f.name)
        if per_layer and all(isinstance(v, (bool, int, float, str)) for v in per_layer):
            distinct = sorted(set(per_layer), key=repr)
            value = distinct[0] if len(distinct) == 1 else distinct
        options[f.name] = sorted(value) if isinstance(value, (set, frozenset)) else value
    return {"peft_type": state.type_name.lower(), "options": options}


def label(settings: Mapping[str, Any]) -> str:
    """``peft:<type>`` (``peft:loha``), the ``method`` column of a bridged run."""
    return f"peft:{str(settings.get('peft_type', '')).lower()}"


SPEC = MethodSpec(
    name="peft",
    config_cls=PeftBridgeConfig,
    apply=apply,
    param_prefix=None,
    merge=merge,
    unmerge=unmerge,
    description="any Hugging Face peft method (method.peft_type), injected through peft's own tuner",
    state_dict=state_dict,
    can_merge=can_merge,
    on_step=on_step,
    label=label,
    weight_updates=weight_updates,
    rank=rank,
    used_settings=used_settings,
)
