"""Groups that recur across rows: group-disjoint splits and overlap warnings."""
import logging

import numpy as np
import pandas as pd
import pytest

from bsmfusion.cli import main
from bsmfusion.data.groups import group_digests, group_split, warn_on_group_overlap
from bsmfusion.data.io import read_table, write_table
from bsmfusion.errors import DataError


def people(n=300, groups=40, seed=0):
    rng = np.random.default_rng(seed)
    seller = rng.integers(0, groups, n).astype(float)
    seller[::37] = np.nan  # rows without a known seller
    return pd.DataFrame({"seller": seller, "x": rng.normal(size=n), "label": rng.integers(0, 2, n)})


def test_group_split_shares_no_group_and_keeps_every_row():
    frame = people()
    train, val, test = group_split(frame, "seller", test_frac=0.2, val_frac=0.15, seed=3)
    assert len(train) + len(val) + len(test) == len(frame)
    sets = [set(part["seller"].dropna()) for part in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(test) >= 0.2 * len(frame) and len(val) >= 0.15 * len(frame)
    assert len(train) >= 0.5 * len(frame)
    again = group_split(frame, "seller", test_frac=0.2, val_frac=0.15, seed=3)
    assert all(a.equals(b) for a, b in zip((train, val, test), again))  # deterministic for a seed


def test_group_split_refuses_impossible_fractions_and_unknown_columns():
    with pytest.raises(DataError, match="leaves no training rows"):
        group_split(people(), "seller", test_frac=0.5, val_frac=0.5)
    with pytest.raises(DataError, match="column 'buyer' is not in the data"):
        group_split(people(), "buyer")


def test_overlap_warning_counts_shared_groups(caplog):
    train = pd.DataFrame({"seller": [1, 2, 3, 4]})
    other = pd.DataFrame({"seller": [3.0, 4.0, 5.0, None]})  # 3 and 3.0 are the same seller
    with caplog.at_level(logging.WARNING, logger="bsmfusion"):
        assert warn_on_group_overlap(group_digests(train, "seller"), other, "seller", "test") == 2
    assert "2 group(s) in column 'seller'" in caplog.text and "bsmfusion split --group seller" in caplog.text
    assert warn_on_group_overlap(group_digests(train, "seller"), pd.DataFrame({"seller": [9]}), "seller", "test") == 0


def test_split_cli_writes_three_group_disjoint_files(tmp_path, capsys):
    write_table(people(), tmp_path / "all.csv")
    assert main(["split", "--data", str(tmp_path / "all.csv"), "--group", "seller", "--out", str(tmp_path / "s"),
                 "--test-frac", "0.2", "--seed", "1"]) == 0
    parts = [read_table(tmp_path / "s" / f"{name}.csv") for name in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 300
    assert not set(parts[0]["seller"].dropna()) & set(parts[2]["seller"].dropna())
    assert "test.csv: " in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["tab_only", "tfidf_lr"])
def test_training_and_evaluate_warn_about_shared_groups(tmp_path, caplog, kind):
    import bsmfusion
    from bsmfusion.evaluation.report import evaluate
    from bsmfusion.workflows.train import train
    from tests.helpers import fast_config, planted_frame

    cfg = fast_config(kind, epochs=1)
    cfg.data.group = "seller"
    frames = [planted_frame(64, "tab", seed) for seed in range(3)]
    for i, frame in enumerate(frames):
        frame["seller"] = [f"s{(i * 64 + j) % 100}" for j in range(len(frame))]  # rows 100+ reuse sellers 0..
    with caplog.at_level(logging.WARNING, logger="bsmfusion"):
        train(cfg, frames[0], frames[1], tmp_path / "m", progress=False)
    assert "in both the training and the validation data" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bsmfusion"):
        evaluate(bsmfusion.load(tmp_path / "m"), frames[2], tmp_path / "report")
    assert "in both the training and the test data" in caplog.text
