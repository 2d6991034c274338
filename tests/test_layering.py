"""The import layering of `src/bsmfusion`, read from the source (ast), function-level imports included.

Layers only point down: a module imports modules of its own layer's package or of layers below, never above, and
packages that share a layer (training, classical) do not import each other. docs/architecture.md draws the same
list. The kind registry (`kinds`) names trainers and loaders of higher layers as "module:attribute" strings,
resolved at call time: that is the one way down-to-up calls happen, and no import shows it.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bsmfusion"

# Bottom to top. Each layer: the module prefixes it holds. Modules of one layer but different prefixes are siblings.
LAYERS: list[tuple[str, ...]] = [
    ("bsmfusion.errors",),
    ("bsmfusion.strict_json", "bsmfusion.version", "bsmfusion.folders", "bsmfusion.resources", "bsmfusion.progress",
     "bsmfusion.precision", "bsmfusion.signing"),
    ("bsmfusion.policy",),
    ("bsmfusion.kinds",),
    ("bsmfusion.config",),
    ("bsmfusion.data",),
    ("bsmfusion.models",),
    ("bsmfusion.evaluation.metrics",),
    ("bsmfusion.calibration",),
    ("bsmfusion.decision",),
    ("bsmfusion.evaluation",),  # operating_point, report
    ("bsmfusion.manifest",),
    ("bsmfusion.bundle",),
    ("bsmfusion.scoring",),
    ("bsmfusion.training", "bsmfusion.classical"),
    ("bsmfusion.ensemble",),
    ("bsmfusion.workflows",),
    ("bsmfusion.explain",),
    ("bsmfusion.inference",),
    ("bsmfusion.serving",),
    ("bsmfusion.api",),
    ("bsmfusion.demo",),
    ("bsmfusion.cli",),
    ("bsmfusion.__main__",),
    ("bsmfusion",),  # the package itself: its __init__ re-exports the API
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(path: Path) -> set[str]:
    """Every bsmfusion module `path` imports, relative imports resolved. `from . import x` names the module `x`
    alone when `x` is one (not the package, whose __init__ is the public API)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            names = {f"{base}.{alias.name}" for alias in node.names}
            found.update(names)
            if not names <= set(MODULES):
                found.add(base)
    return {name for name in found if name in MODULES}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the prefix that placed it): the longest matching prefix wins."""
    matches = [(len(prefix), i, prefix) for i, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)"
    _, index, prefix = max(matches)
    return index, prefix


def wrong_way(importer: str, imported: str) -> bool:
    """An import pointing up, or sideways between sibling packages of one layer."""
    (i, own), (j, other) = layer_of(importer), layer_of(imported)
    return j > i or (j == i and own != other)


def graph() -> dict[str, set[str]]:
    return {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def test_the_resolver_sees_relative_and_function_level_imports():
    assert "bsmfusion.models.scores" in imported_modules(PACKAGE / "training" / "fit.py")
    assert "bsmfusion.training.history" in imported_modules(PACKAGE / "ensemble" / "train.py")  # inside a function
    assert "bsmfusion.inference.predictor" in imported_modules(PACKAGE / "api.py")
    assert "bsmfusion" not in imported_modules(PACKAGE / "decision.py")  # `from . import strict_json`


def test_every_module_sits_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_layers_only_point_down():
    bad = sorted(f"{a} imports {b}" for a, targets in graph().items() for b in targets if wrong_way(a, b))
    assert bad == []


def test_the_rule_catches_the_arrows_the_old_layout_had():
    """Each of these existed before the layers were untangled; the rule must refuse every one."""
    old = [("bsmfusion.bundle", "bsmfusion.classical.storage"), ("bsmfusion.bundle", "bsmfusion"),
           ("bsmfusion.training.fit", "bsmfusion.classical.train"), ("bsmfusion.classical.train", "bsmfusion.ensemble.train"),
           ("bsmfusion.ensemble.model", "bsmfusion.inference.predictor"),
           ("bsmfusion.scoring.scorers", "bsmfusion.inference.onnx_export"),
           ("bsmfusion.calibration", "bsmfusion.decision"), ("bsmfusion.config", "bsmfusion.decision"),
           ("bsmfusion.serving.app", "bsmfusion.api"), ("bsmfusion.kinds", "bsmfusion.models.fusion"),
           ("bsmfusion.training.fit", "bsmfusion.workflows.train")]
    assert [pair for pair in old if not wrong_way(*pair)] == []


def test_no_import_loops():
    edges = graph()
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert loops == []


def test_no_trainer_dispatches_on_kind_but_the_workflow_and_the_ensemble():
    """`training.fit.train_neural` trains a torch fusion and nothing else: only `workflows.train` and the
    ensemble (for its members) look a trainer up in the kind registry."""
    users = sorted(name for name, path in MODULES.items() if "get_kind(" in path.read_text(encoding="utf-8")
                   and ".train(" in path.read_text(encoding="utf-8"))
    assert users == ["bsmfusion.ensemble.train", "bsmfusion.workflows.train"]


def test_data_imports_no_model_training_or_inference_code():
    bad = [f"{a} imports {b}" for a, targets in graph().items() if a.startswith("bsmfusion.data")
           for b in targets if not b.startswith(("bsmfusion.data", "bsmfusion.errors", "bsmfusion.config",
                                                  "bsmfusion.resources", "bsmfusion.kinds", "bsmfusion.policy"))]
    assert bad == []
