"""Run the tests that use a dependency against other versions of it: a small tox-like matrix.

    python scripts/version_matrix.py [--output version-matrix] [--only NAME]

The course's environment pins one version of everything (constraints.txt); the package declares
ranges (pyproject.toml). Each row below installs one version of one package (``pip install
--no-deps --target``, a few MB, no torch download) into its own folder under ``--output``, puts
that folder first on ``PYTHONPATH`` and runs the tests that exercise the package, so each range's
lower bound and newest release are run, not only resolved. Prints one line per row and exits 1
if any row fails. Needs PyPI; about a minute per row on a laptop CPU.

Last run (2-core CPU): every row passed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INTEGRATIONS = "glossloss or matryoshka or cached or evaluator or last_batch or resumed or encoder_decoder"
MATRIX = [  # (package, version, tests, pytest -k)
    ("sentence-transformers", "6.0.1", "tests/test_integrations.py", INTEGRATIONS),  # the lower bound
    ("sentence-transformers", "6.3.0", "tests/test_integrations.py", INTEGRATIONS),  # the newest
    ("accelerate", "1.16.0", "tests/test_integrations.py", "resumed or gradient_accumulation"),  # the newest
    ("optuna", "5.1.0", "tests/test_train.py", "tune"),  # the newest
]


def run_row(package: str, version: str, tests: str, selection: str, output: Path) -> bool:
    folder = output / f"{package}-{version}"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(folder),
               f"{package}=={version}"]
    if not folder.is_dir() and subprocess.run(install).returncode != 0:
        print(f"{package}=={version}: could not be installed")
        return False
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
                   "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", tests, "-k", selection]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    summary = (result.stdout.strip().splitlines() or ["no output"])[-1]
    print(f"{package}=={version}: {'passed' if result.returncode == 0 else 'FAILED'} ({summary})")
    return result.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("version-matrix"), help="folder for the installs")
    parser.add_argument("--only", help="run only the rows of this package")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    rows = [row for row in MATRIX if args.only in (None, row[0])]
    results = [run_row(*row, args.output.resolve()) for row in rows]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
