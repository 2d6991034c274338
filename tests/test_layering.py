"""Import layering, read from the source (ast), function-level imports included: training and the calibration and
decision code sit below inference and serving, and inference sits below the Python API (`bsmfusion.api`)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bsmfusion"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved (`from ..x import y` gives `bsmfusion.x` and
    `bsmfusion.x.y`, since y may be a module)."""
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
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(paths, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{module_name(path)} imports {name}" for path in paths for name in imported_modules(path)
                  if any(name == f or name.startswith(f + ".") for f in forbidden))


def test_the_resolver_sees_relative_and_function_level_imports():
    assert "bsmfusion.models.scores" in imported_modules(PACKAGE / "training" / "fit.py")
    assert "bsmfusion.classical.train" in imported_modules(PACKAGE / "training" / "fit.py")  # inside train()
    assert "bsmfusion.inference.predictor" in imported_modules(PACKAGE / "api.py")


def test_training_imports_neither_inference_nor_serving():
    paths = sorted((PACKAGE / "training").rglob("*.py"))
    assert len(paths) > 5 and violations(paths, ("bsmfusion.inference", "bsmfusion.serving")) == []


def test_calibration_and_decisions_import_neither_inference_nor_serving():
    paths = [PACKAGE / "calibration.py", PACKAGE / "decision.py", PACKAGE / "models" / "scores.py"]
    assert violations(paths, ("bsmfusion.inference", "bsmfusion.serving")) == []


def test_inference_does_not_import_the_python_api():
    assert violations(sorted((PACKAGE / "inference").rglob("*.py")), ("bsmfusion.api",)) == []


def test_data_imports_no_model_training_or_inference_code():
    """`Batch` lives in `data.batch` (the collator builds it) and is re-exported next to `FusionOutput`; the data
    layer stays below the models."""
    paths = sorted((PACKAGE / "data").rglob("*.py"))
    assert violations(paths, ("bsmfusion.models", "bsmfusion.training", "bsmfusion.inference",
                              "bsmfusion.serving")) == []
