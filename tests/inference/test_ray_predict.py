"""Ray Data batch scoring (`bsmfusion predict --ray`, `bsmfusion.ray_predict`): the local predict's columns, every
input row once, scores equal to the local predict in fp32 (≤ 1e-6, order-independent), a broken row keeps its
error; file, folder, glob and DataFrame inputs; rows numbered in read order without an id column. One local Ray
with 2 CPUs for the module."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bsmfusion
from bsmfusion.bundle import write_bundle
from bsmfusion.cli import main
from bsmfusion.data.preprocess import RowPreprocessor
from bsmfusion.data.text import load_tokenizer, tokenizer_source
from bsmfusion.errors import ConfigError, DataError
from bsmfusion.inference.ray_predict import resolve_inputs
from bsmfusion.models.classifier import build_model
from tests.helpers import SHARED_DATA, make_frame, random_bundle, tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own DataContext deprecations

FP32 = 1e-6
SCORES = ["prob_0", "prob_1", "text_contribution", "tab_contribution"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return random_bundle(tmp_path_factory.mktemp("ray") / "model")


def broken_frame(n: int = 48, seed: int = 3) -> pd.DataFrame:
    frame = make_frame(n, seed).astype({"price": object})
    frame.loc[[4, 17], "price"] = "cheap"
    return frame


def price_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: the numeric column as text (missing stays missing), 'cheap' included."""
    return frame.assign(price=[None if pd.isna(v) else str(v) for v in frame["price"]])


def assert_equal_scores(ray_out: pd.DataFrame, local_out: pd.DataFrame, key: str = "id") -> None:
    """Same columns in the same order, every key once, scores ≤ 1e-6 after sorting by the key."""
    assert list(ray_out.columns) == list(local_out.columns)
    assert ray_out[key].is_unique and sorted(ray_out[key]) == sorted(local_out[key])
    a = ray_out.sort_values(key).reset_index(drop=True)
    b = local_out.sort_values(key).reset_index(drop=True)
    for column in SCORES:
        np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), atol=FP32, rtol=0, err_msg=column)
    np.testing.assert_allclose(a["text_share"].to_numpy(), b["text_share"].to_numpy(), atol=20 * FP32, rtol=0)
    labels = [[None if pd.isna(v) else v for v in f["predicted_label"]] for f in (a, b)]
    assert labels[0] == labels[1]
    assert a["error"].tolist() == b["error"].tolist()


@pytest.mark.slow
def test_cli_on_a_glob_of_csv_files_with_broken_rows_equals_the_local_predict(ray_local, bundle, tmp_path, capsys):
    frame = broken_frame()
    (tmp_path / "in").mkdir()
    frame.iloc[:30].to_csv(tmp_path / "in" / "part-1.csv", index=False)
    frame.iloc[30:].to_csv(tmp_path / "in" / "part-2.csv", index=False)
    make_frame(5, seed=9).to_csv(tmp_path / "in" / "other.csv", index=False)  # not matched by the glob
    local = []
    for part in (1, 2):
        assert main(["predict", "--model", str(bundle), "--data", str(tmp_path / "in" / f"part-{part}.csv"), "--out",
                     str(tmp_path / f"local-{part}.parquet"), "--quiet"]) == 0
        local.append(pd.read_parquet(tmp_path / f"local-{part}.parquet"))
    argv = ["predict", "--model", str(bundle), "--data", str(tmp_path / "in" / "part-*.csv"), "--out",
            str(tmp_path / "scores"), "--ray", "--ray-actors", "1", "--batch-rows", "16", "--quiet", "--strict"]
    capsys.readouterr()
    assert main(argv) == 2  # --strict: the folder is written, then the broken rows fail the command
    out, err = capsys.readouterr()
    assert f"wrote 48 rows to {tmp_path / 'scores'} (Parquet folder); 2 with errors" in out
    assert err.startswith("error: --strict: 2 of 48 rows could not be scored")
    ray_out = pd.read_parquet(tmp_path / "scores")
    assert_equal_scores(ray_out, pd.concat(local, ignore_index=True))
    broken = ray_out.set_index("id").loc[["r4", "r17"]]
    assert broken["error"].str.contains("column 'price': value 'cheap' is not a number").all()
    assert broken["prob_1"].isna().all() and broken["predicted_label"].isna().all()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    # a taken --out folder is refused before Ray runs, unless --overwrite
    assert main(argv[:-1]) == 2 and "pass --overwrite to replace it" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent")
@pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors")
def test_cb_nosale_test_split_equals_the_local_predict(ray_local, tmp_path):
    """The real task's 656 test threads (issue 10's check): same ids and columns, fp32 scores ≤ 1e-6."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from tasks import cb_nosale

    task = cb_nosale()
    cfg = tiny_config("gate", data=task.data, text={"max_chunks": 4, "chunk_tokens": 32},
                      train={"precision": "fp32"})
    tokenizer = load_tokenizer(tokenizer_source(cfg.text))
    preprocessor = RowPreprocessor.fit(cfg, tokenizer, task.train)
    torch.manual_seed(2)
    model = build_model(cfg, preprocessor.tabular.numeric_dim, preprocessor.tabular.cardinalities).eval()
    bundle = write_bundle(tmp_path / "model", cfg=cfg, preprocessor=preprocessor, tokenizer=tokenizer, model=model,
                          threshold=0.5, metrics={})
    task.test.to_parquet(tmp_path / "test.parquet")
    assert main(["predict", "--model", str(bundle), "--data", str(tmp_path / "test.parquet"), "--out",
                 str(tmp_path / "local.parquet"), "--quiet"]) == 0
    assert main(["predict", "--model", str(bundle), "--data", str(tmp_path / "test.parquet"), "--out",
                 str(tmp_path / "ray"), "--ray", "--ray-actors", "1", "--batch-rows", "128", "--quiet"]) == 0
    local = pd.read_parquet(tmp_path / "local.parquet")
    assert len(local) == 656 and (local["error"].fillna("") == "").all()
    assert_equal_scores(pd.read_parquet(tmp_path / "ray"), local, key="row_id")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The minimum number of concurrent actors")
def test_a_folder_of_parquet_parts_on_two_actors_without_an_id_column(ray_local, tmp_path):
    """A bundle without data.id: `row` numbers the rows in read order (files sorted by path, then file order), as
    the local predict numbers one file; `_SUCCESS` markers are skipped."""
    bundle = random_bundle(tmp_path / "model", id_column=None)
    frame = price_as_text(broken_frame(60, seed=5).drop(columns="id"))
    folder = tmp_path / "in"
    folder.mkdir()
    for k, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_parquet(folder / f"part-{k}.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    scores = bsmfusion.ray_predict(folder, bundle, actors=2, cpus_per_actor=0.5, batch_rows=8, precision="fp32")
    local = bsmfusion.load(bundle, precision="fp32").predict_frame(frame)
    assert_equal_scores(scores.to_pandas(), local, key="row")
    assert local["error"].str.contains("'cheap'").sum() == 2


@pytest.mark.slow
def test_jsonl_and_csv_globs_are_parsed_as_the_local_predict_parses_them(ray_local, tmp_path):
    """The read side alone (no actors): pandas parses CSV and JSONL inside Ray's read tasks, in frames of
    `batch_rows` rows, so mixed columns and missing cells arrive exactly as the local predict's `iter_table` gives
    them (pandas infers a column's type per frame, there as here)."""
    from bsmfusion.data.io import iter_table
    from bsmfusion.inference.ray_predict import read_dataset

    frame = broken_frame(30, seed=7)
    frame.iloc[:20].to_json(tmp_path / "day-1.jsonl", orient="records", lines=True)
    frame.iloc[20:].to_json(tmp_path / "day-2.jsonl", orient="records", lines=True)
    frame.iloc[:20].to_csv(tmp_path / "day-1.csv", index=False)
    frame.iloc[20:].to_csv(tmp_path / "day-2.csv", index=False)
    make_frame(5, seed=9).to_json(tmp_path / "other.jsonl", orient="records", lines=True)  # not matched
    assert resolve_inputs(str(tmp_path / "day-*.jsonl"))[:2] == (
        [str(tmp_path / "day-1.jsonl"), str(tmp_path / "day-2.jsonl")], "jsonl")
    for suffix in ("jsonl", "csv"):
        got = read_dataset(str(tmp_path / f"day-*.{suffix}"), batch_rows=8).to_pandas()
        expected = pd.concat([frame for day in (1, 2) for frame in iter_table(tmp_path / f"day-{day}.{suffix}", 8)])
        got, expected = (f.sort_values("id").reset_index(drop=True) for f in (got, expected))
        assert list(got.columns) == list(expected.columns) and len(got) == 30
        for column in expected.columns:
            assert [None if pd.isna(v) else v for v in got[column]] == \
                   [None if pd.isna(v) else v for v in expected[column]], (suffix, column)


@pytest.mark.slow
def test_a_bsmfusion_error_inside_a_ray_task_is_found_for_the_one_line_message(ray_local):
    from bsmfusion.inference.ray_predict import user_error

    def fail(batch):
        raise DataError("column 'price' is missing from the input data")

    with pytest.raises(Exception) as caught:
        ray_local.data.from_items([{"a": 1}]).map_batches(fail).materialize()
    assert str(user_error(caught.value)) == "column 'price' is missing from the input data"


@pytest.mark.slow
def test_write_predictions_replaces_a_folder_only_with_overwrite(ray_local, tmp_path):
    from bsmfusion.inference.ray_predict import write_predictions

    scores = ray_local.data.from_pandas(pd.DataFrame({"id": ["a", "b", "c"], "error": ["", "bad", ""]}))
    assert write_predictions(scores, tmp_path / "out") == (3, 1)
    with pytest.raises(ConfigError, match="is not empty; pass overwrite=True"):
        write_predictions(scores, tmp_path / "out")
    assert write_predictions(scores.limit(2), tmp_path / "out", overwrite=True) == (2, 1)
    with pytest.raises(ConfigError, match="a folder of Parquet files"):
        write_predictions(scores, tmp_path / "out.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_inputs_are_checked_before_ray_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    make_frame(3).to_csv(tmp_path / "x.csv", index=False)
    make_frame(3).to_parquet(tmp_path / "y.parquet", index=False)
    with pytest.raises(DataError, match="does not exist"):
        resolve_inputs(str(tmp_path / "missing.parquet"))
    with pytest.raises(DataError, match="holds no .parquet, .csv or .jsonl file"):
        resolve_inputs(tmp_path / "empty")
    with pytest.raises(DataError, match=r"mix table formats \(csv, parquet\)"):
        resolve_inputs(tmp_path)
    with pytest.raises(DataError, match="matches no"):
        resolve_inputs(str(tmp_path / "*.jsonl"))


def test_without_ray_installed_the_error_names_the_extra(monkeypatch, bundle, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r"^Ray is not installed .*pip install 'bsmfusion\[ray\]'"):
        bsmfusion.ray_predict(tmp_path, bundle)
    (tmp_path / "in.csv").write_text("id,dialogue,price,ratio,category\n1,hi,2,0.5,a\n")
    assert main(["predict", "--model", str(bundle), "--data", str(tmp_path / "in.csv"), "--out",
                 str(tmp_path / "out"), "--ray"]) == 2
