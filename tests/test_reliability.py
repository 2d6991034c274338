"""Bad inputs get one-line errors or documented handling; crashes never leave a loadable half-bundle."""
import json
import logging
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bsmfusion
from bsmfusion.bundle import write_bundle
from bsmfusion.cli import main
from bsmfusion.data.dialogue import parse_thread
from bsmfusion.data.io import read_table, write_table
from bsmfusion.data.tabular import TabularPreprocessor
from bsmfusion.errors import BundleError, DataError
from bsmfusion.workflows.train import train
from tests.helpers import cli_train, fast_config, planted_frame, write_train_inputs


@pytest.fixture
def bundle(bundle_factory):
    """concat, one epoch on 64 planted text rows (shared: the tests below copy it before changing it)."""
    return bundle_factory("concat").path


# ---------------------------------------------------------------- bundles
def test_tampered_or_incomplete_bundle_is_refused(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "preprocessing.json").write_text((copy / "preprocessing.json").read_text().replace("0.", "1.", 1))
    with pytest.raises(BundleError, match="'preprocessing.json' does not match its SHA-256"):
        bsmfusion.load(copy)
    shutil.rmtree(copy)
    shutil.copytree(bundle, copy)
    (copy / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="'model.safetensors' is missing"):
        bsmfusion.load(copy)
    with pytest.raises(BundleError, match="does not exist"):
        bsmfusion.load(tmp_path / "nope")


def test_bundle_of_an_older_format_is_refused_with_the_fix(bundle, tmp_path):
    import json
    import shutil

    from bsmfusion.manifest import MANIFEST, sha256_file

    copy = tmp_path / "old"
    shutil.copytree(bundle, copy)
    meta = json.loads((copy / "meta.json").read_text())
    (copy / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps({**manifest, "meta.json": sha256_file(copy / "meta.json")}))
    with pytest.raises(BundleError, match="bundle format 1; .* retrain it with this version"):
        bsmfusion.load(copy)


def test_crash_while_writing_a_bundle_leaves_the_old_one_intact(bundle, tmp_path, monkeypatch):
    import shutil

    import safetensors.torch

    target = tmp_path / "model"
    shutil.copytree(bundle, target)
    before = (target / "manifest.json").read_text()
    loaded = bsmfusion.load(target).bundle

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        write_bundle(target, cfg=loaded.cfg, preprocessor=loaded.preprocessor, tokenizer=loaded.preprocessor.tokenizer,
                     model=loaded.model, threshold=0.5, metrics={})
    assert (target / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
    bsmfusion.load(target)


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_matches(tmp_path):
    cfg = fast_config("concat", epochs=3, checkpoint_every_steps=1)
    write_train_inputs(tmp_path, cfg)
    reference = cli_train(tmp_path, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr[-2000:]
    cmd = [sys.executable, "-m", "bsmfusion", "train", "--config", str(tmp_path / "cfg.yaml"), "--train",
           str(tmp_path / "train.csv"), "--val", str(tmp_path / "val.csv"), "--out", str(tmp_path / "run"), "--quiet"]
    # kill at a random moment once training is under way (a first checkpoint exists): mid-step, mid-checkpoint-write
    delay = np.random.default_rng(int(time.time())).uniform(0.0, 0.5)  # an AMX CPU finishes this run within ~1.5 s
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "run.work" / "last" / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed"
    resumed = cli_train(tmp_path, tmp_path / "run", "--resume")
    assert resumed.returncode == 0, f"killed after {delay:.1f}s: " + resumed.stderr[-2000:]
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())["validation"]
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]
    for key in ("roc_auc", "log_loss", "threshold"):
        assert run[key] == pytest.approx(ref[key], abs=1e-6), (key, delay)
    assert not list((tmp_path / "run.work").rglob("*.partial"))


# ---------------------------------------------------------------- inputs
def test_training_input_errors_name_column_row_and_fix(tmp_path):
    cfg = fast_config("concat", epochs=1)
    good = planted_frame(40, "text", 0)
    with pytest.raises(DataError, match="id 3 appears more than once"):
        train(cfg, good.assign(id=[3, 3] + list(range(4, 42))), good, tmp_path / "a", progress=False)
    with pytest.raises(DataError, match="single class"):
        train(cfg, good.assign(label=1), good, tmp_path / "b", progress=False)
    with pytest.raises(DataError, match="column 'dialogue' is missing from the training data; did you mean 'dialog'"):
        train(cfg, good.rename(columns={"dialogue": "dialog"}), good, tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="no rows"):
        train(cfg, good.iloc[:0], good, tmp_path / "d", progress=False)
    with pytest.raises(DataError, match="label 'maybe' is not one of the training labels"):
        train(cfg, good, good.assign(label=["maybe"] * 40), tmp_path / "e", progress=False)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        read_table(tmp_path / "empty.csv")


def test_overlap_and_leakage_are_warned(tmp_path, caplog):
    cfg = fast_config("tab_only", epochs=1)
    frame = planted_frame(80, "text", 0)
    frame["leak"] = frame["label"] * 10.0
    cfg = fast_config("tab_only", epochs=1, )
    from bsmfusion.config import config_from_dict

    raw = cfg.to_dict()
    raw["data"]["numeric"] = ["price", "leak"]
    cfg = config_from_dict(raw)
    with caplog.at_level(logging.WARNING, logger="bsmfusion"):
        train(cfg, frame, frame.iloc[:40], tmp_path / "m", progress=False)
    text = caplog.text
    assert "column 'leak' alone separates the validation labels" in text
    assert "share 40 id(s) in column 'id'" in text
    assert "column 'price' alone" not in text


def test_predict_keeps_bad_rows_with_an_error(bundle):
    frame = planted_frame(6, "text", 4)
    frame["price"] = frame["price"].astype(object)
    frame.loc[2, "price"] = "twelve"
    frame.loc[3, "dialogue"] = None
    frame.loc[4, "dialogue"] = "   "
    frame.loc[5, "category"] = "never-seen"
    out = bsmfusion.load(bundle).predict_frame(frame)
    assert len(out) == 6 and out["id"].tolist() == frame["id"].tolist()
    assert "column 'price'" in out.loc[2, "error"] and np.isnan(out.loc[2, "prob_1"])
    assert (out.drop(index=2)["error"] == "").all() and out.drop(index=2)["prob_1"].notna().all()


def test_non_utf8_file_and_a_one_megabyte_thread(bundle, tmp_path):
    frame = planted_frame(3, "text", 5)
    path = tmp_path / "latin.csv"
    frame.to_csv(path, index=False, encoding="utf-8")
    raw = path.read_bytes().replace(b"BUYER", b"BUY\xe9R", 1)
    path.write_bytes(raw)
    assert len(read_table(path)) == 3
    frame.loc[0, "dialogue"] = "BUYER: " + "word " * 200_000 + " SELLER: final"
    started = time.perf_counter()
    out = bsmfusion.load(bundle).predict_frame(frame)
    assert time.perf_counter() - started < 30 and out["prob_1"].notna().all()


def test_cli_user_error_is_one_line_without_traceback(bundle, tmp_path, capsys):
    frame = planted_frame(5, "text", 6).drop(columns=["ratio"])
    write_table(frame, tmp_path / "in.csv")
    code = main(["predict", "--model", str(bundle), "--data", str(tmp_path / "in.csv"), "--out", str(tmp_path / "o.csv"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "column 'ratio' is missing" in err


# ---------------------------------------------------------------- fuzz
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), st.text(), st.binary(), st.floats(), st.integers()))
def test_fuzz_dialogue_parser_never_raises(cell):
    messages = parse_thread(cell)
    assert all(isinstance(m.text, str) and m.text == m.text.strip() for m in messages)
    for m in messages:
        m.text.encode("utf-8")  # no lone surrogates survive


PREP = TabularPreprocessor.fit(pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0], "c": ["a", "b", "a", None]}), ["x"], ["c"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(), st.integers(-10**30, 10**30),
                          st.text(max_size=8)), min_size=1, max_size=20),
       st.lists(st.one_of(st.text(max_size=8), st.none(), st.floats()), min_size=1, max_size=20))
def test_fuzz_tabular_preprocessor_only_raises_the_documented_error(xs, cs):
    n = min(len(xs), len(cs))
    frame = pd.DataFrame({"x": pd.Series(xs[:n], dtype=object), "c": pd.Series(cs[:n], dtype=object)})
    try:
        numeric, categorical = PREP.transform(frame)
    except DataError as err:
        assert "is not a number" in str(err) and "column 'x'" in str(err)
        return
    assert np.isfinite(numeric).all() and numeric.shape == (n, 2)
    assert ((categorical >= 0) & (categorical < PREP.cardinalities[0])).all()
