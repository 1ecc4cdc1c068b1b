"""Seeds, devices and precision: what every notebook's setup cell and every training run needs.

Used from ``notebooks/00_overview.ipynb`` on; the precision policy (``choose_precision``) is
taught in ``05_fine_tuning``.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from .graph import float32_matmul

__all__ = ["PRECISIONS", "Precision", "choose_precision", "pick_device", "precision_for", "set_seed"]


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


PRECISIONS = ("auto", "bf16", "fp16", "fp32", "tf32")


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``name`` is ``"bf16"``, ``"fp16"``, ``"fp32"`` or ``"tf32"``; ``reason`` says why.

    ``bf16`` and ``fp16`` run the encoder under autocast (its embeddings are cast to float32 for
    the loss); ``fp16`` also scales the loss (``torch.amp.GradScaler``), because float16's small
    range would flush small gradients to 0. ``tf32`` lets float32 matmuls of the encoder use TF32
    tensor cores; ``fp32`` keeps them IEEE float32. G-Loss's kernel and solve are IEEE float32 in
    every case (``gloss_lite.graph.ieee_float32``).
    """

    name: str
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype of the encoder, or None (no autocast)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def scales_loss(self) -> bool:
        """True for fp16: the loss is scaled before backward and the gradients unscaled before clipping."""
        return self.name == "fp16"

    def autocast(self, device_type: str):
        """The context the encoder's forward pass runs in: autocast for bf16 and fp16, else nothing."""
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

    def matmuls(self):
        """The context a whole step (forward and backward) runs in: TF32 or IEEE float32 matmuls.

        ``tf32`` allows TF32 products, ``fp32`` forbids them even where the user allowed them;
        under bf16 and fp16 the user's setting is left as it is (autocast decides the encoder's).
        G-Loss's forward pass is IEEE float32 in every case (``gloss_lite.graph.ieee_float32``).
        """
        if self.autocast_dtype is not None:
            return nullcontext()
        return float32_matmul("tf32" if self.name == "tf32" else "ieee")


def choose_precision(device_type: str, capability: tuple[int, int] | None = None, override: str = "auto") -> Precision:
    """The precision policy: a pure function of the device type, its compute capability and ``override``.

    ``"auto"``: bf16 autocast where the GPU has bf16 tensor cores (compute capability 8.0 and
    above, what ``torch.cuda.is_bf16_supported(including_emulation=False)`` checks); fp16 autocast
    with a gradient scaler on older GPUs (a T4 is 7.5: it emulates bf16 at or below float32
    speed, while its fp16 tensor cores are about 8 times faster); fp32 on a CPU. Any other value
    is used as asked, with two exceptions that cannot apply: ``"tf32"`` on a CPU or below 8.0 is
    plain fp32. Taught in ``notebooks/05_fine_tuning.ipynb``.
    """
    if override not in PRECISIONS:
        raise ValueError(f"amp must be one of {PRECISIONS}, got {override!r}")
    if device_type != "cuda":
        if override == "auto":
            return Precision("fp32", f"float32 on a {device_type} (autocast pays off on GPUs)")
        if override == "tf32":
            return Precision("fp32", f"float32: TF32 is a GPU matmul mode, this is a {device_type}")
        return Precision(override, f"{override} as asked, on a {device_type}")
    if capability is None:
        raise ValueError("a CUDA device needs its compute capability, such as (7, 5) for a T4")
    shown = f"compute capability {capability[0]}.{capability[1]}"
    native = tuple(capability) >= (8, 0)
    if override == "auto":
        if native:
            return Precision("bf16", f"bf16 autocast: {shown} has bf16 tensor cores")
        return Precision("fp16", f"fp16 autocast with loss scaling: {shown} has no bf16 tensor cores "
                                 "(bf16 would only be emulated), its fp16 tensor cores are fast")
    if override == "tf32" and not native:
        return Precision("fp32", f"float32: TF32 needs compute capability 8.0, this GPU has {shown}")
    if override == "bf16" and not native:
        return Precision("bf16", f"bf16 as asked, emulated on {shown}: at or below float32 speed")
    return Precision(override, f"{override} as asked ({shown})")


def precision_for(device: str | torch.device, override: str = "auto", *, capability_of=None) -> Precision:
    """``choose_precision`` for ``device``, its compute capability read by ``capability_of(device)``.

    ``capability_of`` defaults to ``torch.cuda.get_device_capability``; tests pass their own.
    """
    device = torch.device(device)
    capability = None
    if device.type == "cuda":
        capability = tuple((capability_of or torch.cuda.get_device_capability)(device))
    return choose_precision(device.type, capability, override)
