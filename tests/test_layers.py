"""The package's layers: no module imports one of a higher layer, and no import cycle.

The layers are those of the package docstring (``gloss_lite/__init__.py``): the method at the
bottom, then what holds models and data, then the tools built on them. Every import is read
from the source (function-level imports included), so a lazy import cannot hide an arrow.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gloss_lite"

LAYERS = {
    0: ["checks", "graph", "lpa", "masking", "runtime", "plots", "diagrams", "collectives",
        "memory", "trends", "scale_diagrams", "training_plots", "files"],
    1: ["losses", "baselines", "sigma", "evaluate", "explorer", "data", "benchmark_files", "encoders"],
    2: ["training"],
    3: ["integrations", "reproduction", "course"],
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module of the package that ``path`` imports, as a dotted name."""
    package = root.name
    name = module_name(path, root)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != package:
                continue
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules  # `from . import losses`
            found.update(submodules or {target})
    return {m for m in found if m in modules and m != name}


def layer_of(module: str, layers: dict) -> int | None:
    """The layer of a module: that of its top-level name under the package; None for the package face."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for layer, names in layers.items():
        if parts[1] in names:
            return layer
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the package docstring")


def problems(root: Path, layers: dict) -> list[str]:
    """Upward imports, imports by the package face above layer 1, and cycles, as sentences."""
    graph = {module_name(p, root): imported_modules(p, root) for p in sorted(root.rglob("*.py"))}
    found = []
    for module, targets in graph.items():
        mine = layer_of(module, layers)
        for target in sorted(targets):
            theirs = layer_of(target, layers)
            if theirs is None:
                continue
            if (mine is None and theirs > 1) or (mine is not None and theirs > mine):
                found.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append("cycle: " + " -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path, PACKAGE), LAYERS)


def test_no_upward_import_and_no_cycle():
    assert problems(PACKAGE, LAYERS) == []


def write(root: Path, files: dict) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_planted_upward_import_is_found(tmp_path):
    root = write(tmp_path / "pkg", {
        "__init__.py": "from .graph import f\n",
        "graph.py": "def f():\n    from .training import loop\n",  # layer 0 reaching layer 2, lazily
        "training/__init__.py": "",
        "training/loop.py": "from ..graph import f\n",
    })
    layers = {0: ["graph"], 2: ["training"]}
    found = problems(root, layers)
    assert "pkg.graph (layer 0) imports pkg.training.loop (layer 2)" in found
    assert any(line.startswith("cycle: ") and "pkg.graph" in line for line in found)


def test_a_face_that_imports_training_is_found(tmp_path):
    root = write(tmp_path / "pkg", {"__init__.py": "from . import training\n", "training/__init__.py": ""})
    assert problems(root, {2: ["training"]}) == ["pkg (layer None) imports pkg.training (layer 2)"]


def test_a_module_outside_every_layer_is_refused(tmp_path):
    root = write(tmp_path / "pkg", {"__init__.py": "", "stray.py": ""})
    with pytest.raises(AssertionError, match="pkg.stray is in no layer"):
        layer_of(module_name(root / "stray.py", root), {0: ["graph"]})


def test_importing_the_package_loads_torch_and_nothing_heavier():
    import subprocess
    import sys

    code = ("import sys, gloss_lite; heavy = ('transformers', 'pandas', 'sklearn', 'matplotlib', 'optuna', "
            "'papermill', 'pytorch_metric_learning', 'gloss_lite.training', 'gloss_lite.data'); "
            "print([m for m in heavy if m in sys.modules])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
