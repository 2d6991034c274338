"""The Python API: `bsmfusion.train` / `load` → `Predictor.predict`, `predict_proba`, `evaluate`, `explain`, `save`,
and the README's Python example, executed as written (with a tiny encoder config as `my.yaml`)."""
import dataclasses
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import bsmfusion
from bsmfusion.errors import ConfigError, DataError
from bsmfusion.evaluation.metrics import classification_metrics
from bsmfusion.inference.predictor import CONTRIBUTION_COLUMNS, Predictor
from tests.helpers import planted_frame, tiny_config

ROOT = Path(__file__).resolve().parents[1]


def api_config():
    """The tiny encoder, settings that learn the planted keyword in a few epochs (tests/training/test_train.py)."""
    return tiny_config("concat", data={"id": "id"}, text={"max_chunks": 2, "chunk_tokens": 32},
                       train={"epochs": 3, "batch_size": 16, "lr": 3e-3, "head_lr": 3e-3, "warmup_ratio": 0.0,
                              "precision": "fp32"})


@pytest.fixture(scope="module")
def fitted():
    """(predictor, test frame): trained through `bsmfusion.train` with out=None."""
    predictor = bsmfusion.train(api_config().to_dict(), planted_frame(160, "text", 0), planted_frame(80, "text", 1),
                                progress=False)
    return predictor, planted_frame(50, "text", 2)


def test_train_without_out_keeps_a_temporary_bundle_and_no_working_folder(fitted):
    predictor, _ = fitted
    assert isinstance(predictor, Predictor)
    assert (predictor.path / "manifest.json").is_file() and predictor.path.name == "model"
    assert predictor.path.parent.name.startswith("bsmfusion-")
    assert sorted(p.name for p in predictor.path.parent.iterdir()) == ["model"]  # model.work/ removed on success


def test_predict_and_predict_proba_agree_with_predict_frame(fitted):
    predictor, test = fitted
    frame = predictor.predict_frame(test)
    probs = predictor.predict_proba(test)
    assert probs.shape == (50, 2) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[:, 1], frame["prob_1"].to_numpy(), atol=1e-7)
    labels = predictor.predict(test)
    assert isinstance(labels, np.ndarray) and labels.tolist() == frame["predicted_label"].tolist()
    expected = np.where(probs[:, 1] >= predictor.threshold, predictor.label_values[1], predictor.label_values[0])
    assert labels.dtype == np.int64 and labels.tolist() == expected.tolist()  # 0/1 labels come back as integers
    # the planted keyword decides the label: 3 epochs of the tiny encoder learn it
    assert (labels == test["label"]).mean() >= 0.8


def test_explain_returns_the_contribution_columns_on_the_input_index(fitted):
    predictor, test = fitted
    shifted = test.set_axis(range(100, 150))
    explained = predictor.explain(shifted)
    assert list(explained.columns) == list(CONTRIBUTION_COLUMNS) and explained.index.tolist() == list(range(100, 150))
    frame = predictor.predict_frame(test)
    for column in CONTRIBUTION_COLUMNS:
        np.testing.assert_allclose(explained[column].to_numpy(), frame[column].to_numpy(), atol=1e-7)
    assert explained["text_share"].between(0, 1).all()


def test_evaluate_returns_the_metrics_and_writes_a_report_on_request(fitted, tmp_path):
    predictor, test = fitted
    metrics = predictor.evaluate(test)
    expected = classification_metrics(test["label"].to_numpy(), predictor.predict_proba(test), predictor.threshold)
    for key in ("roc_auc", "pr_auc", "f1", "accuracy", "log_loss"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert metrics["n"] == 50 and metrics["roc_auc"] > 0.95
    written = predictor.evaluate(test, out=tmp_path / "report")
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["roc_auc"] == pytest.approx(written["roc_auc"])
    assert (tmp_path / "report" / "report.md").is_file()


def test_rows_that_cannot_be_scored_are_refused_by_name(fitted):
    predictor, test = fitted
    bad = test.astype({"price": object})
    bad.loc[7, "price"] = "cheap"
    for method in (predictor.predict, predictor.predict_proba, predictor.explain):
        with pytest.raises(DataError, match=r"^row 7: column 'price': value 'cheap' is not a number \(1 row\(s\)"):
            method(bad)


def test_save_copies_the_bundle_and_load_takes_explicit_options(fitted, tmp_path):
    predictor, test = fitted
    copy = predictor.save(tmp_path / "copy")
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in predictor.path.iterdir())
    loaded = bsmfusion.load(copy, precision="fp32", batch_size=7, device="cpu")
    np.testing.assert_allclose(loaded.predict_proba(test), predictor.predict_proba(test), atol=1e-6)
    with pytest.raises(ConfigError, match=r"output folder '.*copy' holds a bundle; pass overwrite=True"):
        predictor.save(tmp_path / "copy")
    assert predictor.save(tmp_path / "copy", overwrite=True) == tmp_path / "copy"
    # the options travel as one value; its fields are load's keywords, each documented there
    options = bsmfusion.ScoringOptions(precision="fp32", batch_size=7)
    assert bsmfusion.load(copy, options).options == options
    assert bsmfusion.load(copy, options, batch_size=9).options.batch_size == 9
    doc = inspect.getdoc(bsmfusion.load)
    for field in dataclasses.fields(bsmfusion.ScoringOptions):
        assert re.search(rf"^\s+{field.name}:", doc, re.M), f"load: option '{field.name}' undocumented"
    with pytest.raises(ConfigError, match=r"^unknown scoring option 'chunk_cache'; choose from batch_size, device"):
        bsmfusion.load(copy, chunk_cache=64)


def test_train_checks_config_and_out_before_training(tmp_path):
    frame = planted_frame(20, "text", 0)
    with pytest.raises(ConfigError, match=r"^config dict: unknown config key 'model\.fusoin'; did you mean 'model\.fusion'"):
        bsmfusion.train({"model": {"fusoin": "gate"}}, frame, frame, tmp_path / "a")
    with pytest.raises(ConfigError, match=r"^override train\.epochs: config key 'train\.epochs'"):
        bsmfusion.train(api_config(), frame, frame, tmp_path / "a", overrides={"train.epochs": 0})
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"output folder '.*taken' is not empty; pass overwrite=True to replace it"):
        bsmfusion.train(api_config(), frame, frame, tmp_path / "taken")
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    with pytest.raises(TypeError, match="config must be a YAML path, a dict or a bsmfusion.Config"):
        bsmfusion.train(3, frame, frame)


def test_config_and_load_config_are_exported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(api_config().to_dict()))
    cfg = bsmfusion.load_config(path)
    assert isinstance(cfg, bsmfusion.Config) and cfg.text.chunk_tokens == 32
    assert {"Config", "load_config", "load", "train", "Predictor"} <= set(bsmfusion.__all__)


def test_import_bsmfusion_loads_no_torch_lightning_or_transformers():
    code = ("import sys, bsmfusion; bsmfusion.Config; "
            "print(sorted(m for m in ('torch', 'pytorch_lightning', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_public_entry_point_documents_args_and_returns():
    entry_points = [bsmfusion.train, bsmfusion.load, bsmfusion.load_config, Predictor.predict, Predictor.predict_proba,
                    Predictor.evaluate, Predictor.explain, Predictor.save]
    for function in entry_points:
        doc = inspect.getdoc(function) or ""
        assert "Args:" in doc and "Returns:" in doc, function.__qualname__
        for name in list(inspect.signature(function).parameters)[1 if "." in function.__qualname__ else 0:]:
            assert re.search(rf"^\s+{name}:", doc, re.M), f"{function.__qualname__}: argument '{name}' undocumented"


def readme_python_example() -> str:
    """The ```python block under README's "### Python API" heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Python API", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(api_config().to_dict()))
    for name, n, seed in (("train", 160, 0), ("val", 80, 1), ("test", 50, 2)):
        planted_frame(n, "text", seed).to_csv(tmp_path / f"{name}.csv", index=False)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()[-1]  # after the training progress bar
    assert re.fullmatch(r"ROC-AUC 0\.\d{3}; the dialogue moved \d+% of the decisions", printed)
    assert (tmp_path / "model" / "manifest.json").is_file() and (tmp_path / "model_copy" / "manifest.json").is_file()
    assert not (tmp_path / "model.work").exists()
    scores, probs = namespace["scores"], namespace["probs"]
    assert isinstance(scores, pd.DataFrame) and len(scores) == 50 and probs.shape == (50, 2)
    np.testing.assert_allclose(scores["prob_1"].to_numpy(), probs[:, 1], atol=1e-6)
    assert namespace["metrics"]["roc_auc"] > 0.95
