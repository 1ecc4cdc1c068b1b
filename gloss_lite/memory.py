"""How much memory autograd keeps for the backward pass.

Taught in ``notebooks/08_the_graph_beyond_one_batch.ipynb``, section 2 (the plain and the
cached step). A training step's memory has a part that does not grow with the batch (the
weights, the optimiser's state) and a part that does: the **activations** autograd saves for
the backward pass. ``SavedTensorMeter`` counts that part with
``torch.autograd.graph.saved_tensors_hooks``: each tensor saved for backward adds its bytes
when it is saved and removes them when its graph is freed, so

    peak = max over the step of  sum_{saved tensors alive} numel * element_size.

Tensors that share memory with a parameter (a layer's weight, which autograd also saves) are
weights, not activations, and are not counted.

Imports torch only.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["SavedTensorMeter"]


class _Saved:
    """One saved tensor: its bytes count while this wrapper is alive."""

    def __init__(self, meter: SavedTensorMeter, tensor: torch.Tensor):
        self.meter, self.tensor = meter, tensor
        self.size = tensor.numel() * tensor.element_size()
        meter.live += self.size
        meter.peak = max(meter.peak, meter.live)

    def __del__(self):
        self.meter.live -= self.size


class SavedTensorMeter:
    """Live and peak bytes of the tensors autograd saves while the meter is active.

    ``parameters``: the tensors that are weights, not activations (not counted). Use it as a
    context manager around the forward and backward pass::

        with SavedTensorMeter(model.parameters()) as meter:
            loss_of(model(x)).backward()
        meter.peak_mib   # the step's peak activation memory in MiB
    """

    def __init__(self, parameters: Iterable[torch.Tensor]):
        self.live = self.peak = 0
        self.parameter_memory = {p.untyped_storage().data_ptr() for p in parameters}
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    @property
    def peak_mib(self) -> float:
        """The peak in MiB (2**20 bytes)."""
        return self.peak / 2**20

    def _pack(self, tensor: torch.Tensor):
        if tensor.untyped_storage().data_ptr() in self.parameter_memory:
            return tensor
        return _Saved(self, tensor)

    @staticmethod
    def _unpack(saved):
        return saved.tensor if isinstance(saved, _Saved) else saved

    def __enter__(self) -> SavedTensorMeter:
        hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        hooks.__enter__()
        self._hooks = hooks
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._hooks is not None, "__exit__ without __enter__"
        self._hooks.__exit__(*exc_info)
        self._hooks = None
