"""greenai's layers import one way: from the commands down to torch. Each module belongs to one
layer (its subpackage, or the shared kernel) and imports only from its own layer or lower ones;
the report reads the stores and never imports training code. Read from the source with `ast`,
lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "greenai"

# Lowest first. The kernel (errors, names, the typed config, atomic file writes) is what every layer shares.
# The public API (greenai.api: greenai.Trial, the Lightning callback) sits above the sweep; the
# package's own __init__ hands it out lazily and nothing imports names from it, so it ranks with
# the commands.
LAYERS = ("kernel", "energy", "training", "stores", "trial", "sweep", "report", "api", "commands")
KERNEL = {"greenai.errors", "greenai.names", "greenai.config", "greenai.files"}
COMMANDS = {"greenai", "greenai.train", "greenai.doctor", "greenai.sync"}
# Above the rank rule: what a layer must never import although it sits higher.
NEVER = {"report": {"energy", "training", "trial"}, "stores": {"energy", "training"}}


def layer_of(module: str) -> str:
    if module in KERNEL:
        return "kernel"
    if module in COMMANDS:
        return "commands"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: put it in a subpackage or name it in test_layers.py")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    relative = path.relative_to(package.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str, package: Path = PACKAGE) -> set[str]:
    """Every greenai module `path` imports, lazily or not (`from greenai.x import y` counts as
    greenai.x.y where that is a module, else greenai.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("greenai")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("greenai"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                where = package.parent / candidate.replace(".", "/")
                is_module = where.with_suffix(".py").is_file() or (where / "__init__.py").is_file()
                found.add(candidate if is_module else node.module)
    return found - {module}


def upward_imports(package: Path = PACKAGE) -> list[str]:
    wrong = []
    for path in sorted(package.rglob("*.py")):
        module = module_name(path, package)
        mine = layer_of(module)
        for target in sorted(imported(path, module, package)):
            theirs = layer_of(target)
            if LAYERS.index(theirs) > LAYERS.index(mine) or theirs in NEVER.get(mine, set()):
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    return wrong


def test_every_module_belongs_to_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports() == []


def test_the_rule_sees_an_upward_import(tmp_path):
    """The check itself can fail: a training module that imported the sweeper would be named."""
    fake = tmp_path / "greenai"
    (fake / "training").mkdir(parents=True)
    (fake / "sweep").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "sweep" / "sweeper.py").write_text("")
    (fake / "training" / "loop.py").write_text("def f():\n    from greenai.sweep import sweeper\n")
    assert upward_imports(fake) == ["greenai.training.loop (training) imports greenai.sweep.sweeper (sweep)"]
