"""Dependencies point one way (docs/DESIGN.md, "Layers"): cli -> train -> tasks, methods, models -> rotation;
methods read the model layer's ModelSpec; report reads records only. Checked on the source, import by import."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qgoft_bench"
LEAVES = {"errors", "registry", "records", "config", "files"}  # shared modules any layer may use
ALLOWED = {
    "console": {"cli"},  # the console scripts: signals first, then the command
    "cli": {"train", "report", "config", "placement"},
    "placement": set(),  # a parallel launcher's job: its cores and GPU (errors only)
    "train": {"tasks", "methods", "models", "records", "rotation"},  # rotation: provenance names the CPU path
    "methods": {"models", "rotation"},
    "tasks": set(),
    "models": set(),
    "rotation": set(),
    "report": {"records"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for file in PACKAGE.rglob("*.py"):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        source = layer_of(module)
        for node in ast.walk(ast.parse(file.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("qgoft_bench.") and layer_of(name) != source:
                    found.setdefault(source, set()).add(layer_of(name))
    return found


def test_every_import_follows_the_layers():
    for source, targets in imports().items():
        if source in LEAVES:
            assert targets <= LEAVES, (source, targets)
            continue
        extra = targets - ALLOWED[source] - LEAVES
        assert not extra, f"qgoft_bench.{source} imports {sorted(extra)}"


def test_tasks_load_without_models_methods_or_peft():
    """Reading a data set must not drag in the model zoo (it once took 9 s: data -> models -> methods -> peft)."""
    code = ("import sys, qgoft_bench.tasks; "
            "print(sorted(m for m in ('peft', 'timm', 'qgoft_bench.models', 'qgoft_bench.methods') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
