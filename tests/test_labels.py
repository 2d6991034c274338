"""Labels as users wrote them: `data.positive_label` makes a class the positive one (class 1) everywhere — metrics,
threshold, contributions, the HTTP API — and the rule is said when it is not set; predictions come back in the
training labels' type (0/1 integers stay integers) from Python, from predict's CSV / JSONL / Parquet and over HTTP."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

import bsmfusion
from bsmfusion.bundle import load_bundle
from bsmfusion.cli import main
from bsmfusion.config import config_from_dict
from bsmfusion.data.io import write_table
from bsmfusion.data.labels import class_order, describe_positive, label_type, typed_labels
from bsmfusion.errors import ConfigError, DataError
from bsmfusion.inference.predictor import Predictor
from tests.helpers import classical_config, planted_frame


def fraud_frame(n: int, seed: int) -> pd.DataFrame:
    """A planted table whose label is a string: 'fraud' where the dialogue holds the keyword, else 'legit' (sorted,
    'legit' would be the positive class)."""
    frame = planted_frame(n, "text", seed)
    return frame.assign(label=np.where(frame["label"] == 1, "fraud", "legit"))


def client_for(predictor):
    from fastapi.testclient import TestClient

    from bsmfusion.serving.app import create_app

    return TestClient(create_app(predictor))


# ------------------------------------------------------------------ which class is positive, and why
def test_without_positive_label_the_last_sorted_label_is_positive_and_that_is_said():
    cfg = config_from_dict({})
    assert class_order(cfg, pd.DataFrame({"label": ["legit", "fraud", "legit"]})) == ["fraud", "legit"]
    assert describe_positive(cfg, pd.DataFrame({"label": ["legit", "fraud"]})) == \
        "positive class: 'legit' (sorted last; set data.positive_label to choose)"
    assert describe_positive(cfg, pd.DataFrame({"label": [10, 9, 10]})) == \
        "positive class: 10 (sorted last; set data.positive_label to choose)"  # numbers sort by value, not as text
    multiclass = config_from_dict({"model": {"num_classes": 3}})
    assert describe_positive(multiclass, pd.DataFrame({"label": [0, 1, 2]})) is None


def test_positive_label_picks_class_one_by_its_value_as_written():
    def order(value, labels):
        return class_order(config_from_dict({"data": {"positive_label": value}}), pd.DataFrame({"label": labels}))

    assert order("fraud", ["legit", "fraud"]) == ["legit", "fraud"]
    assert order(0, [0, 1, 1]) == ["1", "0"]
    assert order("0", [0, 1, 1]) == ["1", "0"]  # YAML quoted or not
    assert order(False, [True, False]) == ["True", "False"]
    fraud = config_from_dict({"data": {"positive_label": "fraud"}})
    assert describe_positive(fraud, pd.DataFrame({"label": ["legit", "fraud"]})) == \
        "positive class: 'fraud' (data.positive_label)"


def test_a_wrong_positive_label_is_one_line_naming_key_value_and_the_labels_found():
    cfg = config_from_dict({"data": {"label": "status", "positive_label": "frud"}})
    with pytest.raises(DataError) as err:
        class_order(cfg, pd.DataFrame({"status": ["legit", "fraud"]}))
    assert str(err.value) == ("data.positive_label 'frud' is not one of the labels found in column 'status': "
                              "['fraud', 'legit']; set it to one of them")
    with pytest.raises(ConfigError, match=r"positive_label 'fraud' is for binary tasks, not a model with 3 classes"):
        config_from_dict({"data": {"positive_label": "fraud"}, "model": {"num_classes": 3}})
    both = config_from_dict({"data": {"positive_label": "legit", "label_names": ["legit", "fraud"]}})
    with pytest.raises(DataError, match=r"contradicts data.label_names \['legit', 'fraud'\]"):
        class_order(both, pd.DataFrame({"label": ["legit", "fraud"]}))


def test_a_wrong_positive_label_fails_before_anything_trains(tmp_path):
    cfg = classical_config("tfidf_lr")
    cfg.data.positive_label = "frud"
    with pytest.raises(DataError, match="data.positive_label 'frud' is not one of the labels"):
        bsmfusion.train(cfg, fraud_frame(40, 0), fraud_frame(20, 1), tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.work").exists()


# ------------------------------------------------------------------ label types
@pytest.mark.parametrize("values, kind, typed", [
    ([0, 1, 1], "int", [0, 1]), ([0.0, 1.0], "float", [0.0, 1.0]), ([True, False], "bool", [False, True]),
    (["fraud", "legit"], "str", ["fraud", "legit"]), (pd.Series([1, 0], dtype=object), "int", [0, 1]),
    (["1", "0"], "str", ["0", "1"]),  # digits written as text stay text
])
def test_the_label_type_is_read_from_the_training_column(values, kind, typed):
    series = pd.Series(values)
    names = class_order(config_from_dict({}), pd.DataFrame({"label": series}))
    assert label_type(series, names) == kind and typed_labels(names, kind) == typed
    assert [type(v) for v in typed_labels(names, kind)] == [type(v) for v in typed]


def test_a_bundle_without_a_label_type_keeps_string_labels(bundle_factory, tmp_path):
    """Bundles written before label types: preprocessing.json has no `label_type`, predictions stay '0' / '1'."""
    folder = bundle_factory("tfidf_lr").copy_to(tmp_path / "m")
    state = json.loads((folder / "preprocessing.json").read_text())
    assert state["label_type"] == "int"
    del state["label_type"]
    (folder / "preprocessing.json").write_text(json.dumps(state))
    predictor = Predictor(load_bundle(folder, verify=False))  # the edit breaks the manifest: the old format's shape
    assert predictor.label_values == ["0", "1"]
    assert set(predictor.predict(planted_frame(20, "text", 2)).tolist()) <= {"0", "1"}


# ------------------------------------------------------------------ string labels, 'fraud' positive: CLI, Python, HTTP
def test_fraud_is_the_positive_class_in_train_evaluate_predict_and_http(tmp_path, capsys):
    import yaml

    cfg = classical_config("tfidf_lr")
    cfg.data.positive_label = "fraud"
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    test = fraud_frame(100, 2)
    for name, frame in (("train", fraud_frame(200, 0)), ("val", fraud_frame(100, 1)), ("test", test)):
        write_table(frame, tmp_path / f"{name}.csv")
    model = tmp_path / "model"
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--train", str(tmp_path / "train.csv"),
                 "--val", str(tmp_path / "val.csv"), "--out", str(model)]) == 0
    out, err = capsys.readouterr()
    assert "positive class: 'fraud' (data.positive_label)" in err  # before training
    assert "positive class: 'fraud' (data.positive_label)" in out  # and in the summary

    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "test.csv"), "--out",
                 str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["positives"] == int((test["label"] == "fraud").sum())
    report = (tmp_path / "report" / "report.md").read_text()
    assert "positive class 'fraud' (data.positive_label)" in report

    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "test.csv"), "--out",
                 str(tmp_path / "s.csv"), "--quiet"]) == 0
    scores = pd.read_csv(tmp_path / "s.csv")
    assert list(scores.columns[1:3]) == ["prob_legit", "prob_fraud"]  # class 1 is fraud
    threshold = bsmfusion.load(model).threshold
    assert ((scores["prob_fraud"] >= threshold) == (scores["predicted_label"] == "fraud")).all()
    assert (scores["predicted_label"] == test["label"]).mean() > 0.9
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(test["label"] == "fraud", scores["prob_fraud"]),
                                              abs=1e-4)
    # the contributions are log-odds toward fraud: they add up to logit(P(fraud)), and the keyword pushes up
    log_odds = np.log(scores["prob_fraud"] / scores["prob_legit"])
    total = scores["text_contribution"] + scores["tab_contribution"] + scores["baseline"]
    np.testing.assert_allclose(total, log_odds, atol=1e-4)
    assert scores.loc[test["label"] == "fraud", "text_contribution"].mean() > 0

    predictor = bsmfusion.load(model)
    assert predictor.label_values == ["legit", "fraud"]
    assert predictor.predict(test).tolist() == scores["predicted_label"].tolist()
    with client_for(predictor) as client:
        info = client.get("/v1/model").json()
        assert (info["positive_label"], info["positive_label_source"]) == ("fraud", "data.positive_label")
        records = test.drop(columns="label").head(5).to_dict("records")
        results = client.post("/v1/predict", json={"records": records}).json()["results"]
    assert [r["label"] for r in results] == scores["predicted_label"].head(5).tolist()
    assert [r["probabilities"]["fraud"] for r in results] == pytest.approx(scores["prob_fraud"].head(5).tolist())


# ------------------------------------------------------------------ 0/1 integer labels stay integers
def test_integer_labels_come_back_as_integers_in_python_files_and_http(bundle_factory, tmp_path):
    predictor = bsmfusion.load(bundle_factory("tfidf_lr").path)
    frame = planted_frame(60, "text", 5)
    predicted = predictor.predict(frame)
    assert predicted.dtype == np.int64 and (predicted == frame["label"]).mean() > 0.8
    assert predictor.label_values == [0, 1]

    write_table(frame.drop(columns="label"), tmp_path / "rows.csv")
    for name in ("s.csv", "s.jsonl", "s.parquet"):
        assert main(["predict", "--model", str(predictor.path), "--data", str(tmp_path / "rows.csv"), "--out",
                     str(tmp_path / name), "--quiet"]) == 0
    csv_cells = pd.read_csv(tmp_path / "s.csv", dtype=str)["predicted_label"]
    assert set(csv_cells) <= {"0", "1"}  # not "0.0" / "1.0"
    jsonl = [json.loads(line)["predicted_label"] for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert all(type(v) is int for v in jsonl) and jsonl == predicted.tolist()
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s.parquet")
    assert str(table.schema.field("predicted_label").type) == "int64"
    assert table.column("predicted_label").to_pylist() == predicted.tolist()

    with client_for(predictor) as client:
        info = client.get("/v1/model").json()
        results = client.post("/v1/predict", json=frame.drop(columns="label").head(8).to_dict("records")).json()
    assert info["labels"] == [0, 1] and info["positive_label"] == 1
    assert info["positive_label_source"] == "sorted last; set data.positive_label to choose"
    labels = [r["label"] for r in results["results"]]
    assert all(type(v) is int for v in labels) and labels == predicted[:8].tolist()


def test_a_row_that_cannot_be_scored_keeps_an_empty_integer_label(bundle_factory):
    frame = planted_frame(4, "text", 6).assign(price=["cheap", 1.0, 2.0, 3.0])
    out = bsmfusion.load(bundle_factory("tfidf_lr").path).predict_frame(frame)
    assert str(out["predicted_label"].dtype) == "Int64"
    assert out["predicted_label"].isna().tolist() == [True, False, False, False]


def test_boolean_labels_come_back_as_booleans(tmp_path):
    train, val = planted_frame(120, "text", 0), planted_frame(60, "text", 1)
    train["label"], val["label"] = train["label"] == 1, val["label"] == 1
    bsmfusion.train(classical_config("tfidf_lr"), train, val, tmp_path / "m", progress=False)
    predicted = bsmfusion.load(tmp_path / "m").predict(val)
    assert predicted.dtype == np.bool_ and (predicted == val["label"]).mean() > 0.8


# ------------------------------------------------------------------ every kind, one label path
@pytest.mark.parametrize("kind", [pytest.param("gate", marks=pytest.mark.slow), "tfidf_lr", "gbdt",
                                  pytest.param("ensemble", marks=pytest.mark.slow)])
def test_every_kind_makes_the_positive_label_class_one(bundle_factory, kind):
    """positive_label 0 on 0/1 labels: class 1 is the label 0 (rows without the keyword), whatever the model."""
    bundle = bundle_factory(kind, rows=(120, 60), settings={"data.positive_label": 0})
    predictor = bsmfusion.load(bundle.path)
    assert predictor.label_names == ["1", "0"] and predictor.label_values == [1, 0]
    frame = planted_frame(60, "text", 2)
    out = predictor.predict_frame(frame)
    np.testing.assert_array_equal(predictor.predict_proba(frame)[:, 1], out["prob_0"])
    assert out.loc[frame["label"] == 0, "prob_0"].mean() > out.loc[frame["label"] == 1, "prob_0"].mean()
    assert predictor.predict(frame).dtype == np.int64
