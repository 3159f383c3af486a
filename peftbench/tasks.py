"""Tasks: a train and an evaluation split, tokenized, and how to score predictions."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from peftbench.config import TaskConfig, TrainConfig
from peftbench.errors import ConfigError
from peftbench.task_kinds import TaskKind, get_kind


@dataclass
class TaskData:
    """Tokenized splits of a task, ready for a DataLoader.

    Attributes:
        train: ``datasets.Dataset`` with ``input_ids``, ``attention_mask`` (and ``token_type_ids``) and
            ``labels``.
        eval: the same columns; the score is computed on it.
        metric: the metric name (``accuracy``).
    """

    train: object
    eval: object
    metric: str
    kind: TaskKind


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


def load_splits(cfg: TaskConfig):
    """Returns ``(train, eval)`` as ``datasets.Dataset`` objects, untokenized."""
    import datasets

    if cfg.source == "vader":
        full = datasets.Dataset.from_list(vader_rows(cfg.min_abs_rating))
        split = full.train_test_split(test_size=cfg.validation_fraction, seed=cfg.split_seed)
        return split["train"], split["test"]
    kwargs = {"data_files": dict(cfg.data_files)} if cfg.data_files else {}
    loaded = datasets.load_dataset(cfg.path, cfg.config_name, **kwargs)
    for key, split in (("task.train_split", cfg.train_split), ("task.eval_split", cfg.eval_split)):
        if split not in loaded:
            raise ConfigError(
                f"{key}={split!r} is not a split of {cfg.path}/{cfg.config_name}; it has: {', '.join(loaded)}"
            )
    return loaded[cfg.train_split], loaded[cfg.eval_split]


def check_columns(dataset, cfg: TaskConfig, split: str) -> None:
    """Refuses, with the columns that exist, a task whose configured columns are missing."""
    wanted = {"task.text_column": cfg.text_column, "task.label_column": cfg.label_column}
    if cfg.text_pair_column:
        wanted["task.text_pair_column"] = cfg.text_pair_column
    for key, column in wanted.items():
        if column not in dataset.column_names:
            raise ConfigError(
                f"{key}={column!r} is not a column of the {split} split of task {cfg.name!r}; "
                f"its columns are: {', '.join(dataset.column_names)}"
            )
    if len(dataset) == 0:
        raise ConfigError(f"the {split} split of task {cfg.name!r} is empty")


def load_task(cfg: TaskConfig, tokenizer, train: TrainConfig) -> TaskData:
    """Loads, checks and tokenizes a task's splits (evaluation capped at ``train.eval_size``)."""
    train_split, eval_split = load_splits(cfg)
    check_columns(train_split, cfg, cfg.train_split)
    check_columns(eval_split, cfg, cfg.eval_split)
    if train.eval_size is not None and len(eval_split) > train.eval_size:
        eval_split = eval_split.select(range(train.eval_size))

    kind = get_kind(cfg.kind)

    def prepare(split):
        return split.map(lambda batch: kind.tokenize(batch, cfg, tokenizer, train.max_seq_length),
                         batched=True, remove_columns=split.column_names)

    return TaskData(train=prepare(train_split), eval=prepare(eval_split), metric=cfg.metric, kind=kind)
