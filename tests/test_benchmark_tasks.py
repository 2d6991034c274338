"""The benchmark task loaders reproduce the splits of ../shared/benchmarks/TASKS.md (skipped without the data)."""
import sys
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("name,sizes,positive_rate", [
    ("dnd_nodeal", (10034, 1080, 1041), (0.18, 0.26)),
    ("cb_nosale", (547, 96, 656), (0.2, 0.5)),
    ("clothing_recommend", (18788, 2349, 2349), (0.78, 0.86)),
])
def test_task_splits_match_tasks_md(name, sizes, positive_rate):
    from tasks import TASKS

    task = TASKS[name]()
    assert (len(task.train), len(task.val), len(task.test)) == sizes
    rate = task.train["label"].mean()
    assert positive_rate[0] < rate < positive_rate[1]
    assert not set(task.train["row_id"]) & set(task.test["row_id"])
    for column in [*task.data["numeric"], *task.data["categorical"], task.data["label"]]:
        assert column in task.train.columns
