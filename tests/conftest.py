"""Test-wide settings: quiet progress bars, and the repository root for path-based tests."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# The course runs offline by default; a Hub lookup in a test would only wait for time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
