"""Writes ``expected/``: the report's output on ``runs.csv``, for ``tests/test_report_golden.py``.

The stored files were written once by this script with the single-module report, before it became
a package. Rerun it only to accept a deliberate change of the report's output, and say so in the
commit: ``python tests/data/report_golden/make_expected.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.test_report_golden import CASES, normalise  # noqa: E402


def main() -> None:
    out = HERE / "expected"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(HERE / "runs.csv", Path(tmp) / "runs.csv")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for name, render in CASES.items():
                (out / name).write_text(normalise(name, render(".")), encoding="utf-8")
                print(f"wrote {out / name}")
        finally:
            os.chdir(cwd)


if __name__ == "__main__":
    main()
