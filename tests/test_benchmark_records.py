"""Records are generated: the re-scoring and default-bundle speed tables in docs/performance.md are what the
benchmark scripts render from their stored JSON (benchmarks/results/), byte for byte."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = (ROOT / "docs" / "performance.md").read_text()


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted(RESULTS.glob("rescoring*.json")), ids=lambda p: p.stem)
def test_rescoring_tables_are_rendered_from_their_json(path):
    rescoring = script("rescoring")
    label = path.stem.removeprefix("rescoring").removeprefix("_") or "concat"
    mark, end = rescoring.markers(label)
    table = rescoring.render_markdown(json.loads(path.read_text()))
    assert f"{mark}\n{table}{end}" in DOC


def test_the_default_bundle_speed_table_is_rendered_from_its_json():
    speed = script("speed")
    table = speed.render_default(json.loads((RESULTS / "speed_default.json").read_text()))
    assert f"{speed.DEFAULT_MARK}\n{table}{speed.DEFAULT_END}" in DOC
