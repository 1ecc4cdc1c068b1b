"""Seeds and devices: the two lines every notebook's setup cell needs.

Used from ``notebooks/00_overview.ipynb`` on.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["pick_device", "set_seed"]


def set_seed(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's generators; return a fresh ``torch.Generator`` with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` gives CUDA when a GPU is visible, else the CPU; anything else is checked and returned."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no GPU is visible; use device='auto' or 'cpu'")
    return device
