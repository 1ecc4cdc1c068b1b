"""How a checker calls a student's function: the calls, and the values that cross between two processes.

A checker never touches a student's function directly. It asks for one of the ``CALLS`` below
(``"call"``: the function on some arguments; the others build what a function of exercise
03.2, 05.1, 07.2 or 08.1 needs, such as a small model or a loss to call, and report what it
did), with plain data as arguments: numbers, strings, tensors, generators, lists, tuples and
dicts of them. What comes back is plain data too. In a notebook (``gloss_lite.course.checking``)
the call runs in the same process; when grading (``gloss_lite.course.grading``) it runs in a
worker process and both ways cross a pipe as ``encode``/``decode`` write them, so the grader
never runs a student's code and never unpickles what a worker sends.

``encode`` turns a value into JSON-ready data: a tensor becomes its dtype, shape and bytes, a
generator its state, and anything else (a numpy array, an object of the student's own class) an
``Opaque`` that keeps only its type's name and, when ``float(value)`` works, that number.
``decode`` reads such data back and refuses anything malformed.

This module imports nothing of the package: the grading worker loads it alone.
"""

from __future__ import annotations

import base64
import math

import torch

MAX_DEPTH = 12  # nesting of lists, tuples and dicts in one value
DTYPES = {str(dtype).removeprefix("torch."): dtype for dtype in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8, torch.int16, torch.int32,
    torch.int64, torch.bool)}


class Opaque:
    """A value that does not cross as itself: its type's name, and its ``float`` when it has one."""

    def __init__(self, type_name: str, number: float | None = None) -> None:
        self.type_name, self.number = str(type_name)[:80], number

    def __float__(self) -> float:
        if self.number is None:
            raise TypeError(f"a {self.type_name} is not a number")
        return self.number

    def __eq__(self, other) -> bool:
        return isinstance(other, Opaque) and (self.type_name, self.number) == (other.type_name, other.number)

    def __repr__(self) -> str:
        return f"<{self.type_name}>"


# ---------------------------------------------------------------------------------------------
# Values as JSON-ready data
# ---------------------------------------------------------------------------------------------

def _number_or_none(value) -> float | None:
    try:
        number = float(value)
    except Exception:  # whatever the value's own __float__ raises stays here
        return None
    return number if type(number) is float else None


def _tensor(value: torch.Tensor) -> dict:
    plain = torch.Tensor.detach(value).cpu().contiguous()
    if type(plain) is not torch.Tensor:
        plain = plain.as_subclass(torch.Tensor)
    name = str(plain.dtype).removeprefix("torch.")
    if name not in DTYPES:
        return {"opaque": f"tensor of dtype {name}", "number": None}
    raw = plain.view(torch.int16) if plain.dtype == torch.bfloat16 else plain
    return {"tensor": {"dtype": name, "shape": list(plain.shape), "requires_grad": bool(value.requires_grad),
                       "data": base64.b64encode(raw.numpy().tobytes()).decode("ascii")}}


def encode(value, depth: int = 0):
    """``value`` as JSON-ready data (see the module's docstring); never raises."""
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if depth >= MAX_DEPTH:
        return {"opaque": f"{kind.__name__} nested more than {MAX_DEPTH} deep", "number": None}
    if kind in (list, tuple):
        return {kind.__name__: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"dict": [[encode(key, depth + 1), encode(item, depth + 1)] for key, item in value.items()]}
    if isinstance(value, torch.Tensor):
        try:
            return _tensor(value)
        except Exception:
            return {"opaque": kind.__name__, "number": None}
    if kind is torch.Generator:
        return {"generator": base64.b64encode(value.get_state().numpy().tobytes()).decode("ascii")}
    return {"opaque": kind.__name__, "number": _number_or_none(value)}


class MalformedValue(ValueError):
    """Data that ``encode`` did not write."""


def _decode_tensor(data: dict) -> torch.Tensor:
    dtype, shape = DTYPES.get(data.get("dtype")), data.get("shape")
    if dtype is None or not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
        raise MalformedValue("a tensor with an unknown dtype or shape")
    raw = base64.b64decode(data.get("data", ""), validate=True)
    storage = torch.int16 if dtype == torch.bfloat16 else dtype
    size = math.prod(shape) * torch.empty((), dtype=storage).element_size()
    if len(raw) != size:
        raise MalformedValue(f"a tensor of shape {shape} with {len(raw)} bytes")
    flat = torch.frombuffer(bytearray(raw), dtype=storage) if raw else torch.empty(0, dtype=storage)
    tensor = flat.reshape(shape).clone()
    tensor = tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor
    return tensor.requires_grad_() if data.get("requires_grad") is True and tensor.is_floating_point() else tensor


def decode(data):
    """The value ``encode`` wrote as ``data``; ``MalformedValue`` for anything else."""
    try:
        return _decode(data, 0)
    except MalformedValue:
        raise
    except (TypeError, ValueError, RuntimeError, RecursionError) as error:  # binascii.Error is a ValueError
        raise MalformedValue(f"unreadable data ({type(error).__name__})") from None


def _decode(data, depth: int):
    if data is None or type(data) in (bool, int, float, str):
        return data
    if depth > MAX_DEPTH + 1 or type(data) is not dict or len(data) not in (1, 2):
        raise MalformedValue("an unexpected structure")
    key, item = next(iter(data.items()))
    if key in ("list", "tuple") and type(item) is list:
        items = [_decode(element, depth + 1) for element in item]
        return items if key == "list" else tuple(items)
    if key == "dict" and type(item) is list and all(type(pair) is list and len(pair) == 2 for pair in item):
        try:
            return {_decode(k, depth + 1): _decode(v, depth + 1) for k, v in item}
        except TypeError:  # an unhashable key
            raise MalformedValue("a dict with an unhashable key") from None
    if key == "float" and item in ("nan", "inf", "-inf"):
        return float(item)
    if key == "tensor" and type(item) is dict:
        return _decode_tensor(item)
    if key == "generator" and type(item) is str:
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(base64.b64decode(item, validate=True)), dtype=torch.uint8))
        return generator
    if key == "opaque" and type(item) is str and type(data.get("number")) in (float, int, type(None)):
        number = data.get("number")
        return Opaque(item, None if number is None else float(number))
    raise MalformedValue(f"an unexpected entry {key!r}")


# ---------------------------------------------------------------------------------------------
# The calls
# ---------------------------------------------------------------------------------------------

def call(function, *args):
    """The student's function on ``args``."""
    return function(*args)


def value_and_gradient(function, args: list, wrt: int = 0) -> dict:
    """The function's value on ``args`` and its gradient with respect to ``args[wrt]`` (a leaf made
    here); ``carries_gradient`` is False when the value is not a tensor that requires grad."""
    args = list(args)
    leaf = args[wrt].detach().clone().requires_grad_()
    args[wrt] = leaf
    value = function(*args)
    carries = isinstance(value, torch.Tensor) and value.requires_grad and value.numel() == 1
    gradient = None
    if carries:
        (gradient,) = torch.autograd.grad(value, leaf, allow_unused=True)
        gradient = torch.zeros_like(leaf) if gradient is None else gradient
    return {"value": value, "carries_gradient": bool(carries), "gradient": gradient}


def small_model(encoder_state: dict, head_state: dict, lr: float):
    """The encoder (Linear + tanh) and linear head of exercise 05.1, from their parameters, and SGD."""
    d_in, d = encoder_state["0.weight"].shape[1], encoder_state["0.weight"].shape[0]
    encoder = torch.nn.Sequential(torch.nn.Linear(d_in, d), torch.nn.Tanh()).double()
    head = torch.nn.Linear(d, head_state["weight"].shape[0]).double()
    encoder.load_state_dict(encoder_state)
    head.load_state_dict(head_state)
    return encoder, head, torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=lr)


def parameters(encoder, head) -> dict:
    return {f"encoder.{name}": value.detach().clone() for name, value in encoder.named_parameters()} | {
        f"head.{name}": value.detach().clone() for name, value in head.named_parameters()}


def training_steps(function, model: dict, batch: tuple, steps: int) -> list[dict]:
    """``steps`` calls of a training step on one small model (``small_model``); after each, the
    returned loss and every parameter."""
    encoder, head, optimizer = small_model(model["encoder"], model["head"], model["lr"])
    taken = []
    for _ in range(steps):
        loss = function(encoder, head, optimizer, *batch)
        taken.append({"loss": loss, "parameters": parameters(encoder, head)})
    return taken


def share_terms(start: torch.Tensor, a: torch.Tensor, b: torch.Tensor, lam: float, two_passes: bool) -> tuple:
    """Weighted CE and aux terms with known gradients, at one embedding tensor or two (exercise 07.2)."""
    first = start.clone().requires_grad_()
    second = start.clone().requires_grad_() if two_passes else first
    return (1 - lam) * (first * a).sum(), first, lam * ((second * b) ** 2).sum() / 2, second


def gradient_share(function, start, a, b, lam, two_passes):
    """The student's share of the aux gradient on the terms of ``share_terms``."""
    return function(*share_terms(start, a, b, lam, two_passes))


def coupling_loss(weights: torch.Tensor):
    """A loss of all the embeddings at once (every row's term depends on every other row), as G-Loss is."""

    def loss_of_embeddings(embeddings):
        return torch.logsumexp(embeddings @ embeddings.T / 2, dim=1).mean() + (embeddings * weights).sum()

    return loss_of_embeddings


def cached_gradient(function, weight, inputs, loss_weights, chunk_size) -> dict:
    """The student's dLoss/dW, and how it called the loss: each call's shape, and whether the
    embeddings it got were a leaf that requires grad (exercise 08.1)."""
    loss_of = coupling_loss(loss_weights)
    calls = []

    def watched(embeddings):
        calls.append([list(embeddings.shape), embeddings.grad_fn is None and embeddings.requires_grad])
        return loss_of(embeddings)

    value = function(weight, inputs, watched, chunk_size)
    return {"value": value, "calls": calls}


CALLS = {"call": call, "value_and_gradient": value_and_gradient, "training_steps": training_steps,
         "gradient_share": gradient_share, "cached_gradient": cached_gradient}
