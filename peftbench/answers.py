"""Answer extractors: what a generation task compares, taken from a generated or reference text.

Named in ``task.answer_extractor``; no torch, so the config can check the name at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable


def _normalise_number(text: str) -> str:
    """``"1,234."`` -> ``"1234"``, ``"$5"`` -> ``"5"``, ``"7.50"`` -> ``"7.5"``, ``"3.0"`` -> ``"3"``."""
    text = text.replace(",", "").replace("$", "").strip().rstrip(".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def first_number(text: str) -> str:
    """The first number in ``text``, normalised; ``""`` if there is none."""
    found = NUMBER.search(text)
    return _normalise_number(found.group()) if found else ""


def last_number(text: str) -> str:
    """The last number in ``text``, normalised; ``""`` if there is none."""
    found = NUMBER.findall(text)
    return _normalise_number(found[-1]) if found else ""


def gsm8k_answer(text: str) -> str:
    """GSM8K's final answer: the number after ``####`` (how its solutions end), else the last one."""
    if "####" in text:
        return first_number(text.split("####", 1)[1]) or last_number(text)
    return last_number(text)


EXTRACTORS: dict[str, Callable[[str], str]] = {
    "strip": str.strip,
    "first_line": lambda text: (text.strip().splitlines() or [""])[0].strip(),
    "first_number": first_number,
    "last_number": last_number,
    "gsm8k": gsm8k_answer,
}


def extract_answer(text: str, extractor: str) -> str:
    """Applies the named answer extractor (see ``EXTRACTORS``) to a generated or reference text."""
    return EXTRACTORS[extractor](text)
