"""Which training budget each comparison holds, and which settings stopped before theirs.

Rows of different budgets must not be compared with each other: :func:`budget_statement` says
which budget a table holds or warns that it mixes several, and :func:`stopped_notes` explains each
:data:`~peftbench.report.cells.STOPPED_MARK`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from peftbench.report.cells import STOPPED_MARK, budget_label, missing, reasons_text, steps_text
from peftbench.report.groups import floats


def stopped_count(rec: dict[str, Any]) -> int:
    """How many seeds of a comparison row stopped before their budget."""
    count = rec.get("n_stopped_early")
    return 0 if missing(count) else int(count)


def _budgets_of(table: pd.DataFrame) -> tuple[list[tuple[str, int]], bool]:
    """The distinct budgets of a table's rows (label, number of settings), smallest first, and
    whether any of them was inferred from the steps taken."""
    if "budget_unit" not in table.columns or "budget" not in table.columns:
        return [("?", len(table))], False
    units = table["budget_unit"].astype("str").tolist()
    amounts = floats(table["budget"]).tolist()
    counts: dict[tuple[str, float], int] = {}
    for unit, amount in zip(units, amounts, strict=True):
        key = (unit, math.inf if math.isnan(amount) else amount)
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (item[0][0] == "", item[0][0], item[0][1]))
    labels = [
        (budget_label(unit, None if amount == math.inf else amount), n) for (unit, amount), n in ordered
    ]
    inferred = "budget_inferred" in table.columns and bool(table["budget_inferred"].fillna(False).any())
    return labels, inferred


def budget_statement(table: pd.DataFrame) -> str:
    """Says which training budget the rows of one comparison (one model and task) were trained on.

    Args:
        table: Rows of a :func:`comparison_table`, normally those of one model and task.

    Returns:
        ``"Budget: 150 steps."`` when every row has the same budget; a warning naming each budget
        and its number of settings when they differ, since rows of different budgets must not be
        compared with each other.
    """
    labels, inferred = _budgets_of(table)
    how = " (taken as the steps trained by runs recorded without a budget)" if inferred else ""
    if len(labels) <= 1:
        label = labels[0][0] if labels else "?"
        if label == "?":
            return "Budget: not recorded (?)."
        return f"Budget: {label}{how}."
    listed = ", ".join(f"{label} ({n} setting{'s' if n != 1 else ''})" for label, n in labels)
    return (
        f"Warning: this table mixes training budgets: {listed}{how}. Compare only rows with the same "
        "budget; 'vs best', 'vs full' and Pareto are computed within each budget."
    )


def is_warning(line: str) -> bool:
    """Whether a budget line is a warning (the table mixes budgets)."""
    return "Warning:" in line


def _comparisons(table: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(model, task, row positions) of each model and task, in the order they first appear."""
    groups = table.groupby(["model", "task"], sort=False).indices
    return [(str(model), str(task), index) for (model, task), index in groups.items()]


def budget_lines(table: pd.DataFrame) -> list[str]:
    """Budget statements (:func:`budget_statement`) for a table that holds several models and tasks.

    Args:
        table: A :func:`comparison_table`.

    Returns:
        One line when every row has the same budget, else one line per model and task, prefixed
        with ``model / task:``; nothing for an empty table.
    """
    if table.empty:
        return []
    if len(_budgets_of(table)[0]) == 1:
        return [budget_statement(table)]
    return [
        f"{model or '-'} / {task or '-'}: {budget_statement(table.iloc[index])}"
        for model, task, index in _comparisons(table)
    ]


def stopped_notes(table: pd.DataFrame, *, with_model_task: bool = True) -> list[str]:
    """Explains each :data:`STOPPED_MARK`: which setting, why, how many seeds and after how many steps.

    Args:
        table: A :func:`comparison_table` (or some of its rows).
        with_model_task: Name the model and task of each setting (for a table that holds several).

    Returns:
        One line per setting of which at least one seed stopped before its budget, e.g.
        ``† lora r=8 lr=0.001 (150 steps): stopped before its budget (early stopping): 1 of 3 seeds,
        mean 120 of 150 steps``.
    """
    if "n_stopped_early" not in table.columns:
        return []
    notes = []
    for rec in table[table["n_stopped_early"].fillna(0).to_numpy(dtype="int64") > 0].to_dict("records"):
        where = f"{rec['model'] or '-'} / {rec['task'] or '-'}, " if with_model_task else ""
        budget = budget_label(rec.get("budget_unit"), rec.get("budget"))
        reasons = reasons_text(rec.get("stop_reason"))
        steps = ""
        if not missing(rec.get("stopped_steps")):
            taken = steps_text(rec["stopped_steps"])
            total = rec.get("budget_steps")
            steps = (
                f", mean {taken} of {steps_text(total)} steps"
                if not missing(total)
                else (f", mean {taken} steps trained")
            )
        notes.append(
            f"{STOPPED_MARK} {where}{rec['method']} {rec['setting']} ({budget}): stopped before its budget"
            f"{f' ({reasons})' if reasons else ''}: {stopped_count(rec)} of {rec['n_seeds']} seed{'' if rec['n_seeds'] == 1 else 's'}{steps}"
        )
    return notes
