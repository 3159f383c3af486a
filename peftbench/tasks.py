"""Tasks: a train and an evaluation split, tokenized, and how to score predictions.

Sources (``task.source``):

- ``datasets``: ``datasets.load_dataset(path, config_name)``, the Hugging Face Hub (GLUE, GSM8K...).
- ``local``: CSV, JSON Lines or Parquet files named in ``task.data_files``; without an evaluation
  file a seeded share of the training file is held out.
- ``vader``: the VADER sentiment lexicon shipped in the vaderSentiment package.
- ``arithmetic``: integer arithmetic problems generated from ``task.split_seed`` (no download).

Every split is checked before any training: its columns exist, it is not empty and its labels
parse; an error names the file (or dataset split) and the column.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from peftbench.config import TaskConfig, TrainConfig
from peftbench.errors import ConfigError
from peftbench.metrics import load_metric
from peftbench.task_kinds import TaskKind, make_kind

LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class TaskData:
    """Tokenized splits of a task, ready for a DataLoader.

    Attributes:
        train: ``datasets.Dataset`` with ``input_ids``, ``attention_mask`` (and ``token_type_ids``) and
            ``labels``.
        eval: the same columns; the score is computed on it.
        metric: the main metric's name (``accuracy``); its value is the run's score.
        kind: the task's kind, bound to its config.
        extra_metrics: more metrics computed on the same predictions.
        extra_evals: more evaluation splits by name (MNLI's mismatched validation set).
        scored_on: what ``eval`` is: the eval split's name, or the search slice of the train split.
    """

    train: Any
    eval: Any
    metric: str
    kind: TaskKind
    extra_metrics: list[str] = field(default_factory=list)
    extra_evals: dict[str, Any] = field(default_factory=dict)
    scored_on: str = ""

    def score(self, predictions: list, references: list) -> tuple[float, dict[str, float]]:
        """Computes every metric; returns ``(main score, {name: value} of all values)``.

        The main score is the main metric's value of its own name, else its first value.
        """
        results = {}
        for name in [self.metric, *self.extra_metrics]:
            values = load_metric(name).compute(predictions=predictions, references=references)
            if name == self.metric:
                main = float(values[name] if name in values else next(iter(values.values())))
            results.update({k: float(v) for k, v in values.items() if isinstance(v, (int, float))})
        return main, results


def vader_rows(min_abs_rating: float) -> list[dict]:
    """Items of the VADER lexicon whose mean rating is at least ``min_abs_rating`` from neutral.

    Each line of ``vader_lexicon.txt`` is ``token<TAB>mean<TAB>std<TAB>[10 ratings]``; the label is 1
    for a positive mean and 0 for a negative one.
    """
    text = resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        mean = float(parts[1])
        if abs(mean) >= min_abs_rating:
            rows.append({"text": parts[0], "label": int(mean > 0)})
    return rows


def arithmetic_rows(cfg: TaskConfig) -> tuple[list[dict], list[dict]]:
    """``(train, eval)`` problems ``a<op>b`` with their integer results, generated from ``split_seed``.

    Operands are drawn uniformly below ``10**digits``; no evaluation problem occurs in training.
    """
    rng = random.Random(cfg.split_seed)
    space = 10**cfg.digits
    if (cfg.num_train + cfg.num_eval) * 2 > space * space * len(cfg.operations):
        raise ConfigError(
            f"task.num_train + task.num_eval = {cfg.num_train + cfg.num_eval} is too many distinct problems "
            f"for task.digits={cfg.digits} and task.operations={cfg.operations!r}; raise digits"
        )
    seen: set[str] = set()

    def draw(count: int) -> list[dict]:
        rows = []
        while len(rows) < count:
            a, b, op = rng.randrange(space), rng.randrange(space), rng.choice(cfg.operations)
            text = f"{a}{op}{b}"
            if text in seen:
                continue
            seen.add(text)
            result = a + b if op == "+" else a - b if op == "-" else a * b
            rows.append({"text": text, "answer": str(result)})
        return rows

    eval_rows = draw(cfg.num_eval)
    return draw(cfg.num_train), eval_rows


def read_local_file(path: str, split: str) -> Any:
    """One CSV, JSON Lines or Parquet file as a ``datasets.Dataset``; clear errors for bad files."""
    import datasets

    file = Path(path).expanduser()
    what = f"task.data_files.{split}={path!r}"
    if not file.is_file():
        raise ConfigError(f"{what}: no such file (relative paths are from where you run)")
    builder = LOCAL_FORMATS.get(file.suffix.lower())
    if builder is None:
        raise ConfigError(f"{what}: unknown file type {file.suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
    if file.stat().st_size == 0:
        raise ConfigError(f"{what}: the file {file} is empty")
    if builder != "parquet" and _text_rows(file, header=builder == "csv") == 0:
        raise ConfigError(f"{what}: the file {file} has no rows")
    try:
        loaded = datasets.load_dataset(builder, data_files={"data": str(file)}, split="data")
    except Exception as err:  # pandas, pyarrow and json errors alike: name the file
        message = str(err).splitlines()[0] if str(err) else ""
        raise ConfigError(f"{what}: could not read {file} as {builder} ({type(err).__name__}: {message})") from None
    if len(loaded) == 0:
        raise ConfigError(f"{what}: the file {file} has no rows")
    return loaded


def _text_rows(file: Path, header: bool) -> int:
    """Non-blank lines after the header, counted in the first 64 KiB only (enough to tell "none")."""
    with open(file, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f.read(65536).splitlines() if line.strip()]
    return max(0, len(lines) - int(header))


def load_splits(cfg: TaskConfig) -> dict[str, tuple[Any, str]]:
    """Every split the task uses, untokenized: ``{split: (dataset, where it came from)}``."""
    import datasets

    names = [cfg.train_split, cfg.eval_split, *cfg.extra_eval_splits]
    if cfg.source == "vader":
        full = datasets.Dataset.from_list(vader_rows(cfg.min_abs_rating))
        split = full.train_test_split(test_size=cfg.validation_fraction, seed=cfg.split_seed)
        return {cfg.train_split: (split["train"], "the VADER lexicon"), cfg.eval_split: (split["test"], "the VADER lexicon")}
    if cfg.source == "arithmetic":
        train_rows, eval_rows = arithmetic_rows(cfg)
        where = "the generated arithmetic problems"
        return {cfg.train_split: (datasets.Dataset.from_list(train_rows), where),
                cfg.eval_split: (datasets.Dataset.from_list(eval_rows), where)}
    if cfg.source == "local":
        return local_splits(cfg, names)
    data_files = {split: path for split, path in (cfg.data_files or {}).items() if path}
    kwargs = {"data_files": data_files} if data_files else {}
    loaded = datasets.load_dataset(cfg.path, cfg.config_name, **kwargs)
    keys = ("task.train_split", "task.eval_split", *["task.extra_eval_splits"] * len(cfg.extra_eval_splits))
    for key, split in zip(keys, names, strict=True):
        if split not in loaded:
            raise ConfigError(
                f"{key}={split!r} is not a split of {cfg.path}/{cfg.config_name}; it has: {', '.join(loaded)}"
            )
    return {split: (loaded[split], f"the {split} split of {cfg.path}/{cfg.config_name}") for split in names}


def local_splits(cfg: TaskConfig, names: list[str]) -> dict[str, tuple[Any, str]]:
    """Splits from ``task.data_files``; a missing evaluation file is a seeded share of the training one."""
    files = {split: path for split, path in (cfg.data_files or {}).items() if path}
    if cfg.train_split not in files:
        raise ConfigError(
            f"task {cfg.name!r} (source local) needs task.data_files with a {cfg.train_split!r} file, for example "
            f"task.data_files.{cfg.train_split}=data/train.csv (and task.data_files.{cfg.eval_split}=data/dev.csv, "
            f"or a share of the training file is held out); got {dict(cfg.data_files or {})}"
        )
    unknown = sorted(set(files) - set(names))
    if unknown:
        raise ConfigError(
            f"task.data_files names the split(s) {', '.join(unknown)}, which the task does not use; its splits "
            f"are task.train_split={cfg.train_split!r}, task.eval_split={cfg.eval_split!r}"
            + (f" and task.extra_eval_splits={list(cfg.extra_eval_splits)}" if cfg.extra_eval_splits else "")
        )
    missing = [s for s in cfg.extra_eval_splits if s not in files]
    if missing:
        raise ConfigError(f"task.extra_eval_splits names {', '.join(missing)}, which task.data_files has no file for")
    splits = {split: (read_local_file(path, split), f"file {path}") for split, path in files.items()}
    for split, (dataset, where) in splits.items():  # before any split: rows are reported as in the file
        check_columns(dataset, cfg, where)
        splits[split] = (parse_labels(dataset, cfg, where), where)
    if cfg.eval_split not in splits:
        train, where = splits[cfg.train_split]
        if len(train) < 2:
            raise ConfigError(f"task.data_files.{cfg.train_split}: {where} has {len(train)} row, too few to "
                              f"hold out a validation share; give task.data_files.{cfg.eval_split} too")
        held = train.train_test_split(test_size=cfg.validation_fraction, seed=cfg.split_seed)
        splits[cfg.train_split] = (held["train"], where)
        splits[cfg.eval_split] = (held["test"], f"{where} (held-out share {cfg.validation_fraction})")
    return splits


def check_columns(dataset: Any, cfg: TaskConfig, where: str) -> None:
    """Refuses, with the columns that exist, a split whose configured columns are missing or empty."""
    wanted = {"task.text_column": cfg.text_column, "task.label_column": cfg.label_column}
    if cfg.text_pair_column:
        wanted["task.text_pair_column"] = cfg.text_pair_column
    for key, column in wanted.items():
        if column not in dataset.column_names:
            raise ConfigError(
                f"{key}={column!r} is not a column of {where} (task {cfg.name!r}); "
                f"its columns are: {', '.join(dataset.column_names)}"
            )
    if len(dataset) == 0:
        raise ConfigError(f"{where} (task {cfg.name!r}) is empty")


def parse_label(value: Any, cfg: TaskConfig) -> Any:
    """The label as the task's kind needs it; raises ValueError with the reason if it does not parse."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("it is empty")
    if cfg.kind != "classification":
        return str(value)
    if cfg.num_labels == 1:
        return float(value)
    if cfg.label_names is not None and str(value) in cfg.label_names:
        return list(cfg.label_names).index(str(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not number.is_integer() or not 0 <= number < cfg.num_labels:
        names = f"one of {list(cfg.label_names)} or " if cfg.label_names else ""
        raise ValueError(f"it is not {names}a class id in 0..{cfg.num_labels - 1}"
                         + ("" if cfg.label_names else " (labels given as names need task.label_names)"))
    return int(number)


def parse_labels(dataset: Any, cfg: TaskConfig, where: str) -> Any:
    """Checks and converts the label column; the first bad value is reported with its row."""
    values = list(dataset[cfg.label_column])
    parsed = []
    for row, value in enumerate(values):
        try:
            parsed.append(parse_label(value, cfg))
        except (TypeError, ValueError) as err:
            reason = str(err) if str(err).startswith("it ") else "it is not a number (task.num_labels=1: regression)"
            raise ConfigError(
                f"task.label_column={cfg.label_column!r} of {where} (task {cfg.name!r}): the value {value!r} in "
                f"data row {row + 1} does not parse as a label: {reason}"
            ) from None
    if parsed == values and all(type(p) is type(v) for p, v in zip(parsed, values, strict=True)):
        return dataset
    return dataset.remove_columns(cfg.label_column).add_column(cfg.label_column, parsed)


def infer_label_names(cfg: TaskConfig) -> list[str] | None:
    """Class names read from the training split's label column when it holds names (``pos``/``neg``)
    and ``task.label_names`` is not set: its sorted unique values, as transformers' ``run_glue.py``
    does, so name ``i`` is class id ``i``. None when there is nothing to infer: labels that are class
    ids, regression, generation, names already given, a built-in source, or a hub dataset (whose
    labels are class ids; reading it twice would cost a second load)."""
    import datasets

    if cfg.kind != "classification" or cfg.num_labels == 1 or cfg.label_names is not None:
        return None
    if cfg.source == "local":
        path = (cfg.data_files or {}).get(cfg.train_split)
        if not path:
            return None  # load_task names the missing file
        train = read_local_file(path, cfg.train_split)
    elif cfg.source == "datasets" and cfg.path in set(LOCAL_FORMATS.values()):  # files through datasets' csv/json
        files = {split: path for split, path in (cfg.data_files or {}).items() if path}
        train = datasets.load_dataset(cfg.path, cfg.config_name, split=cfg.train_split,
                                      **({"data_files": files} if files else {}))
    else:
        return None
    if cfg.label_column not in train.column_names:
        return None  # load_task names the missing column
    values = [v for v in train[cfg.label_column] if v is not None and str(v).strip()]
    if not values or any(_is_class_id(v) for v in values):
        return None  # class ids (a stray name among them is a typo that load_task reports with its row)
    names = sorted({str(v) for v in values})
    if len(names) < 2:
        raise ConfigError(f"task.label_column={cfg.label_column!r} of {cfg.train_split!r} holds one label only, "
                          f"{names[0]!r}: a classifier needs two classes or more (task.label_names fixes them)")
    return names


def use_label_names(cfg: TaskConfig, names: list[str]) -> TaskConfig:
    """The task with inferred class names (and as many labels), said once on the terminal."""
    print(f"peftbench: task {cfg.name!r}: class names inferred from the training split's "
          f"{cfg.label_column!r} column (sorted; task.label_names fixes them): "
          + ", ".join(f"{i}={name}" for i, name in enumerate(names)))
    return dataclasses.replace(cfg, label_names=list(names), num_labels=len(names))


def _is_class_id(value: Any) -> bool:
    try:
        return float(value).is_integer()
    except (TypeError, ValueError):
        return False


def load_task(cfg: TaskConfig, tokenizer: Any, train: TrainConfig, eval_on: str = "eval") -> TaskData:
    """Loads, checks and tokenizes a task's splits (evaluation capped at ``train.eval_size``).

    With ``eval_on="search"`` a seeded ``cfg.search_fraction`` of the training split is held out and
    scored instead of ``cfg.eval_split``, which is then not used at all.
    """
    splits = {}
    for split, (dataset, where) in load_splits(cfg).items():
        check_columns(dataset, cfg, where)
        splits[split] = parse_labels(dataset, cfg, where)
    scored_on, eval_split, extra_evals = cfg.eval_split, cfg.eval_split, list(cfg.extra_eval_splits)
    if eval_on == "search":
        held = splits[cfg.train_split].train_test_split(test_size=cfg.search_fraction, seed=cfg.split_seed)
        splits[cfg.train_split], splits["search"] = held["train"], held["test"]
        eval_split, extra_evals = "search", []
        scored_on = f"search: {cfg.search_fraction:g} of {cfg.train_split} (seed {cfg.split_seed})"
    for split, dataset in splits.items():
        if split != cfg.train_split and train.eval_size is not None and len(dataset) > train.eval_size:
            splits[split] = dataset.select(range(train.eval_size))

    kind = make_kind(cfg)

    def prepare(split: str):
        role = "train" if split == cfg.train_split else "eval"
        dataset = splits[split]
        return dataset.map(lambda batch: kind.tokenize(batch, cfg, tokenizer, train.max_seq_length, split=role),
                           batched=True, remove_columns=dataset.column_names)

    return TaskData(train=prepare(cfg.train_split), eval=prepare(eval_split), metric=cfg.metric, kind=kind,
                    extra_metrics=list(cfg.extra_metrics), extra_evals={s: prepare(s) for s in extra_evals},
                    scored_on=scored_on)


def truncation_note(data: TaskData, max_seq_length: int) -> str | None:
    """A one-line warning when training examples reach ``train.max_seq_length``, else None.

    Tokenizing truncates silently; a row at exactly the cap was most likely cut, so a cap far below
    the task's lengths (``train.max_seq_length=4``) trains on fragments without a word said.
    """
    import pyarrow.compute

    lengths = pyarrow.compute.list_value_length(data.train.with_format("arrow")["input_ids"]).to_pylist()
    capped = sum(length >= max_seq_length for length in lengths)
    if not capped:
        return None
    return (f"peftbench: {capped:,} of {len(lengths):,} training examples ({100 * capped / len(lengths):.0f}%) "
            f"reach train.max_seq_length={max_seq_length} tokens, so were probably cut to it; raise "
            "train.max_seq_length if the task's texts are longer")
