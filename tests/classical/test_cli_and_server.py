"""A classical member through the same paths as a neural model: CLI train/predict/evaluate/export, the server."""
import json

import pandas as pd
import pytest
import yaml

import bsmfusion
from bsmfusion.cli import main
from bsmfusion.data.io import write_table
from bsmfusion.inference.predictor import CONTRIBUTION_COLUMNS
from tests.helpers import classical_config, planted


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    cfg = classical_config("concat")  # the kind comes from --set, as a user would write it
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    for name, seed, n in (("train", 0, 300), ("val", 1, 150), ("test", 2, 120)):
        write_table(planted(n, "text", seed), root / f"{name}.csv")
    code = main(["train", "--config", str(root / "cfg.yaml"), "--train", str(root / "train.csv"), "--val",
                 str(root / "val.csv"), "--out", str(root / "model"), "--set", "model.fusion=tfidf_lr", "--quiet"])
    assert code == 0
    return root


def test_cli_train_predict_evaluate_on_a_classical_member(cli_bundle, capsys):
    root = cli_bundle
    assert json.loads((root / "model" / "meta.json").read_text())["kind"] == "tfidf_lr"
    assert main(["predict", "--model", str(root / "model"), "--data", str(root / "test.csv"), "--out",
                 str(root / "scores.csv"), "--quiet"]) == 0
    scores = pd.read_csv(root / "scores.csv")
    assert list(scores.columns) == ["id", "prob_0", "prob_1", "predicted_label", *CONTRIBUTION_COLUMNS, "error"]
    assert len(scores) == 120 and scores["prob_1"].notna().all()
    assert main(["evaluate", "--model", str(root / "model"), "--data", str(root / "test.csv"), "--out",
                 str(root / "report")]) == 0
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.95 and metrics["scoring_precision"].startswith("fp64")
    report = (root / "report" / "report.md").read_text()
    assert "`tfidf_lr` model scored 120 rows" in report
    assert ("of the positive class 1 (sorted last; set data.positive_label to choose); precision, recall, F1, the "
            "curves and the contributions' sign are for that class") in report
    out = capsys.readouterr()
    assert "precision: fp64" in out.err


def test_cli_export_refuses_a_classical_member_in_one_line(cli_bundle, capsys):
    assert main(["export", "--model", str(cli_bundle / "model"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is a tfidf_lr model with no neural member: there is no torch graph to export" in err


def test_cli_summary_refuses_a_classical_member(cli_bundle, capsys):
    assert main(["summary", "--config", str(cli_bundle / "cfg.yaml"), "--fusion", "gbdt"]) == 2
    assert "is a classical member" in capsys.readouterr().err


def test_server_scores_a_classical_member_like_the_batch_predictor(cli_bundle):
    from fastapi.testclient import TestClient

    from bsmfusion.serving.app import ServerSettings, create_app

    predictor = bsmfusion.load(cli_bundle / "model")
    frame = planted(6, "text", 7)
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]
    records[2]["price"] = "cheap"  # a bad cell: an error for that record only
    with TestClient(create_app(predictor, ServerSettings())) as client:
        info = client.get("/v1/model").json()
        answer = client.post("/v1/predict", json={"records": records}).json()["results"]
    assert info["fusion"] == "tfidf_lr" and info["precision"]["used"] == "fp64"
    expected = predictor.predict_frame(frame.drop(index=2))
    good = [r for r in answer if not r["error"]]
    assert [r["id"] for r in good] == expected["id"].tolist() and "not a number" in answer[2]["error"]
    for result, (_, row) in zip(good, expected.iterrows()):
        assert result["probabilities"]["1"] == pytest.approx(row["prob_1"], abs=1e-6)
        assert result["label"] == row["predicted_label"]
        for name in CONTRIBUTION_COLUMNS:
            assert result[name] == pytest.approx(row[name], abs=1e-6)
