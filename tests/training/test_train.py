"""End-to-end training on synthetic tables with a planted signal (tiny BERT, fp32, seconds per run)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bsmfusion
from bsmfusion.data.io import write_table
from bsmfusion.evaluation.metrics import best_f1_threshold
from bsmfusion.workflows.train import train
from tests.helpers import (PRECISIONS, ROOT, cli_train, fast_config, planted_frame, prob_tolerance,
                           write_train_inputs)


def auc_after_training(tmp_path, fusion, signal, epochs=8, tab_encoder="plr"):
    cfg = fast_config(fusion, epochs)
    cfg.model.tab_encoder = tab_encoder
    result = train(cfg, planted_frame(400, signal, 0), planted_frame(200, signal, 1), tmp_path / fusion, progress=False)
    return result.val_metrics["roc_auc"]


@pytest.mark.slow
@pytest.mark.parametrize("fusion,expect_high", [("concat", True), ("text_only", True), ("tab_only", False)])
def test_text_signal(tmp_path, fusion, expect_high):
    auc = auc_after_training(tmp_path, fusion, "text")
    assert (auc > 0.95) if expect_high else (auc < 0.7), auc


@pytest.mark.slow
@pytest.mark.parametrize("fusion,expect_high", [("gate", True), ("text_only", False)])
def test_tabular_signal(tmp_path, fusion, expect_high):
    auc = auc_after_training(tmp_path, fusion, "tab")
    assert (auc > 0.95) if expect_high else (auc < 0.7), auc


@pytest.mark.slow
def test_interaction_signal_needs_a_multiplicative_fusion(tmp_path):
    """label = keyword XOR (x > 0): concat's logits are additive in text and tab, so it cannot fit it;
    cross_attn's two-layer merge network over both embeddings can. The test is about the fusions, so it uses the
    design's tabular encoder, whose single layer learns the sign of x in these 10 epochs (PLR needs about 20 at
    this size: 1.0 ROC-AUC after 20, 0.83 after 10)."""
    assert auc_after_training(tmp_path, "cross_attn", "interaction", epochs=10, tab_encoder="design") > 0.95
    assert auc_after_training(tmp_path, "concat", "interaction", epochs=10, tab_encoder="design") < 0.75


@pytest.fixture
def trained(bundle_factory):
    """(result, bundle, validation frame): gate, 3 epochs on 300 planted text rows (the session's shared bundle).
    Over 3 s to train on 2 cores: every test that needs it is marked slow."""
    bundle = bundle_factory("gate", rows=(300, 120), epochs=3)
    return bundle.result, bundle.path, planted_frame(120, "text", 1)


@pytest.mark.slow
def test_bundle_round_trip_gives_identical_predictions(trained):
    result, out, val = trained
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.yaml", "encoder", "manifest.json", "meta.json", "metrics.json", "model.safetensors",
                     "preprocessing.json", "tokenizer", "validation_scores.json"]
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.bin"))
    first = bsmfusion.load(out).predict_frame(val)
    second = bsmfusion.load(out).predict_frame(val)
    np.testing.assert_array_equal(first["prob_1"].to_numpy(), second["prob_1"].to_numpy())
    assert first["id"].tolist() == val["id"].tolist()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["label_names"] == ["0", "1"] and meta["fusion"] == "gate" and "torch" in meta["versions"]


@pytest.mark.slow
def test_threshold_is_chosen_on_validation(trained):
    result, out, val = trained
    predictor = bsmfusion.load(out)
    probs = predictor.predict_frame(val)["prob_1"].to_numpy()
    assert predictor.threshold == pytest.approx(best_f1_threshold(val["label"].to_numpy(), probs), abs=1e-6)
    assert json.loads((out / "metrics.json").read_text())["validation"]["threshold"] == pytest.approx(predictor.threshold)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_predict_streams_in_order_with_bounded_batches(trained, tmp_path, monkeypatch, precision):
    _, out, _ = trained
    big = planted_frame(2500, "text", 5)
    big["id"] = [f"row-{i}" for i in range(len(big))]
    src = tmp_path / "big.csv"
    write_table(big, src)
    predictor = bsmfusion.load(out, precision=precision)
    seen = []
    original = predictor.predict_frame

    def spy(frame, **kwargs):
        seen.append(len(frame))
        return original(frame, **kwargs)

    monkeypatch.setattr(predictor, "predict_frame", spy)
    for name in ("scores.csv", "scores.jsonl", "scores.parquet"):
        seen.clear()
        assert predictor.predict_file(src, tmp_path / name, batch_rows=300, progress=False) == (2500, 0)
        assert max(seen) <= 300 and sum(seen) == 2500
        got = bsmfusion.data.io.read_table(tmp_path / name)
        assert got["id"].tolist() == big["id"].tolist()
        assert set(got.columns) == {"id", "prob_0", "prob_1", "predicted_label", "text_contribution",
                                    "tab_contribution", "baseline", "text_share", "error"}
    whole = original(big)
    # fp32: a row's score does not depend on the frame it was streamed in; bf16: within its rounding
    tolerance = 1e-6 if precision == "fp32" else prob_tolerance(precision)
    np.testing.assert_allclose(got["prob_1"].to_numpy(), whole["prob_1"].to_numpy(), atol=tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
def test_scores_do_not_depend_on_the_batch_a_row_lands_in(trained, precision):
    """fp32: the same row scores the same (≤ 1e-6) whatever its batch size and neighbours; bf16 within its tolerance."""
    _, out, _ = trained
    frame = planted_frame(150, "text", 7)
    frame.loc[3, "dialogue"] = " <eos> ".join(["BUYER: " + "refund please " * 20] * 3)  # several chunks
    reference = bsmfusion.load(out, precision=precision, batch_size=1).predict_frame(frame).set_index("id")["prob_1"]
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    tolerance = 1e-6 if precision == "fp32" else prob_tolerance(precision)
    for batch_size in (1, 7, 64):
        for table in (frame, shuffled):
            got = bsmfusion.load(out, precision=precision, batch_size=batch_size).predict_frame(table).set_index("id")
            np.testing.assert_allclose(got["prob_1"].reindex(reference.index).to_numpy(), reference.to_numpy(),
                                       atol=tolerance, err_msg=f"batch_size={batch_size}")


@pytest.mark.slow
def test_bundle_records_the_precision_of_its_threshold(trained):
    _, out, _ = trained
    meta = json.loads((out / "meta.json").read_text())
    assert meta["validation_precision"] == {"requested": "fp32", "used": "fp32", "reason": "asked"}
    assert bsmfusion.load(out).precision.used == "fp32"  # scores by default as it was validated
    assert bsmfusion.load(out).describe_precision() == "fp32 (asked)"


@pytest.mark.slow
def test_bundle_records_every_epochs_validation_metrics(trained):
    """meta.json keeps the monitored metric of each epoch (3 epochs, patience 50: all run), and the best
    checkpoint's score is the best of them."""
    _, out, _ = trained
    meta = json.loads((out / "meta.json").read_text())
    history = meta["validation_history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert [row["step"] for row in history] == [19, 38, 57]  # 300 rows / 16 per batch = 19 steps an epoch
    monitored = [row[meta["monitor"]] for row in history]
    assert meta["best_score"] == pytest.approx(max(monitored), abs=1e-6)
    assert all("val_loss" in row for row in history)


@pytest.mark.slow
def test_freeze_layers_keeps_the_lower_layers_pretrained_and_trains_the_rest(tmp_path):
    """`train.freeze_layers: 1` on the 2-layer tiny BERT: one epoch or three, the bundles' embeddings and layer 0
    are the same weights (those training started from), their layer 1 and head differ; with 0 layer 0 trains."""
    from safetensors.torch import load_file

    data = planted_frame(96, "text", 0), planted_frame(48, "text", 1)
    weights = {}
    for name, epochs, frozen in (("one", 1, 1), ("three", 3, 1), ("none", 3, 0)):
        cfg = fast_config("concat", epochs=epochs, freeze_layers=frozen, keep_weights="last")
        train(cfg, *data, tmp_path / name, progress=False)
        weights[name] = load_file(str(tmp_path / name / "model.safetensors"))
    backbone = "text_subnetwork.backbone."
    lower = [n for n in weights["one"] if n.startswith((backbone + "embeddings.", backbone + "encoder.layer.0."))]
    upper = [n for n in weights["one"] if n.startswith(backbone + "encoder.layer.1.")]
    assert len(lower) > 10 and len(upper) > 10
    assert all(torch.equal(weights["one"][n], weights["three"][n]) for n in lower)
    assert all(not torch.equal(weights["one"][n], weights["three"][n]) for n in upper if n.endswith(".weight"))
    assert not all(torch.equal(weights["three"][n], weights["none"][n]) for n in lower)


@pytest.mark.slow
def test_freeze_layers_trains_the_same_model_with_and_without_its_cache(tmp_path, caplog):
    """The frozen layers' output kept in memory (the default) or recomputed every step (frozen_layer_cache_gib 0):
    the same dropout draws, the same weights and validation history, within float error."""
    import logging

    from safetensors.torch import load_file

    data = planted_frame(96, "text", 0), planted_frame(48, "text", 1)
    metas, weights, said = {}, {}, {}
    for name, gib in (("kept", 8.0), ("recomputed", 0.0)):
        cfg = fast_config("concat", epochs=2, freeze_layers=1, frozen_layer_cache_gib=gib, keep_weights="last")
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bsmfusion.frozen_layers"):
            train(cfg, *data, tmp_path / name, progress=False)
        said[name] = caplog.text
        metas[name] = json.loads((tmp_path / name / "meta.json").read_text())
        weights[name] = load_file(str(tmp_path / name / "model.safetensors"))
    assert "kept in memory" in said["kept"] and "they run in every step instead" in said["recomputed"]
    for name in weights["kept"]:
        torch.testing.assert_close(weights["kept"][name], weights["recomputed"][name], atol=1e-5, rtol=1e-4)
    for a, b in zip(metas["kept"]["validation_history"], metas["recomputed"]["validation_history"]):
        assert a["val_log_loss"] == pytest.approx(b["val_log_loss"], abs=1e-5)


@pytest.mark.slow
def test_keep_weights_last_runs_every_epoch_and_keeps_the_last_weights(tmp_path):
    """`train.keep_weights: last` (a refit for a fixed epoch count): no early stopping even with patience 1, and the
    bundle holds the last epoch's weights, not the best checkpoint's."""
    import torch
    from safetensors.torch import load_file

    from bsmfusion.training.history import best_epoch

    cfg = fast_config("concat", epochs=3, patience=1, keep_weights="last", checkpoint_every_steps=1)
    out = tmp_path / "model"
    flipped = planted_frame(64, "text", 1)
    flipped["label"] = 1 - flipped["label"]  # the better it learns, the worse validation gets: the best epoch is early
    result = train(cfg, planted_frame(160, "text", 0), flipped, out, progress=False, keep_work=True)
    meta = json.loads((out / "meta.json").read_text())
    assert [row["epoch"] for row in meta["validation_history"]] == [1, 2, 3] and meta["epochs_run"] == 3
    assert best_epoch(meta["validation_history"], meta["monitor"]) < 3  # so best and last weights differ
    last = torch.load(result.work_dir / "last" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    weights = load_file(str(out / "model.safetensors"))
    compared = [name for name in weights if f"model.{name}" in last and "baseline" not in name]
    assert len(compared) > 20
    for name in compared:
        assert torch.equal(weights[name], last[f"model.{name}"].float()), name


def test_best_epoch_is_the_earliest_best_row():
    from bsmfusion.training.history import best_epoch, best_row

    rows = [{"epoch": 1, "step": 10, "val_roc_auc": 0.7, "val_loss": 0.6},
            {"epoch": 2, "step": 20, "val_roc_auc": 0.9, "val_loss": 0.5},
            {"epoch": 3, "step": 30, "val_roc_auc": 0.9, "val_loss": 0.4}]
    assert best_epoch(rows, "val_roc_auc") == 2
    assert best_epoch(rows, "val_loss") == 3  # a loss is minimised
    with pytest.raises(ValueError, match="val_f1"):
        best_epoch(rows, "val_f1")
    halves = [{"epoch": 1, "step": 5, "val_roc_auc": 0.8}, {"epoch": 1, "step": 10, "val_roc_auc": 0.7},
              {"epoch": 2, "step": 15, "val_roc_auc": 0.75}]  # two scorings an epoch (train.checks_per_epoch: 2)
    assert best_row(halves, "val_roc_auc")["step"] == 5 and best_epoch(halves, "val_roc_auc") == 1


def _killed_run(tmp_path, out, step: int):
    """Train in a subprocess that a test callback SIGKILLs at optimiser step `step` (tests/training/killed_run.py)."""
    cmd = [sys.executable, str(ROOT / "tests" / "training" / "killed_run.py"), str(tmp_path / "cfg.yaml"),
           str(tmp_path / "train.csv"), str(tmp_path / "val.csv"), str(out), str(step)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def assert_same_validation_metrics(reference_bundle: Path, resumed_bundle: Path) -> None:
    """The resumed run ends with the uninterrupted run's validation metrics and threshold (≤ 1e-6)."""
    ref_metrics = json.loads((reference_bundle / "metrics.json").read_text())["validation"]
    run_metrics = json.loads((resumed_bundle / "metrics.json").read_text())["validation"]
    for key in ("roc_auc", "pr_auc", "log_loss", "threshold", "f1"):
        assert run_metrics[key] == pytest.approx(ref_metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(tmp_path):
    cfg = fast_config("concat", epochs=3, checkpoint_every_steps=2)
    write_train_inputs(tmp_path, cfg)
    reference = cli_train(tmp_path, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr[-2000:]
    # 160 rows / 16 = 10 steps per epoch: step 15 is the middle of epoch 2; the last checkpoint is step 14.
    killed = _killed_run(tmp_path, tmp_path / "run", step=15)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "run").exists()
    assert (tmp_path / "run.work" / "last" / "last.ckpt").is_file()
    resumed = cli_train(tmp_path, tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_validation_metrics(tmp_path / "ref", tmp_path / "run")
    # the epoch finished before the kill is in the resumed bundle's history, with the uninterrupted run's value
    ref_history, run_history = (json.loads((tmp_path / name / "meta.json").read_text())["validation_history"]
                                for name in ("ref", "run"))
    assert [r["epoch"] for r in run_history] == [r["epoch"] for r in ref_history] == [1, 2, 3]
    for ref_row, run_row in zip(ref_history, run_history):
        assert run_row["val_roc_auc"] == pytest.approx(ref_row["val_roc_auc"], abs=1e-6)


@pytest.mark.slow
def test_ddp_two_cpu_processes_identical_weights_and_one_bundle(tmp_path):
    cfg = fast_config("gate", epochs=1, strategy="ddp", devices=2, accelerator="cpu")
    write_train_inputs(tmp_path, cfg)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run = cli_train(tmp_path, tmp_path / "ddp", launcher=launcher, env={"OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp.work" / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert (tmp_path / "ddp" / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".ddp", "ddp"))) == ["ddp", "ddp.work"]
    assert run.stdout.count("bundle:") == 1


@pytest.mark.slow
def test_evaluate_writes_metrics_plots_and_report(trained, tmp_path, capsys):
    from bsmfusion.cli import main

    _, out, val = trained
    write_table(val, tmp_path / "val.csv")
    assert main(["evaluate", "--model", str(out), "--data", str(tmp_path / "val.csv"), "--out", str(tmp_path / "rep")]) == 0
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["n"] == len(val) and 0 <= metrics["roc_auc"] <= 1
    for png in ("roc.png", "pr.png", "calibration.png", "confusion.png", "contributions.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 5000
        assert f"]({png})" in (tmp_path / "rep" / "report.md").read_text()


@pytest.mark.slow
def test_num_workers_feed_both_loaders_and_change_no_result(tmp_path, monkeypatch):
    from bsmfusion.training import fit

    built = []
    original = fit._loader
    monkeypatch.setattr(fit, "_loader", lambda *a, **k: built.append(original(*a, **k)) or built[-1])
    train_df, val_df = planted_frame(96, "text", 0), planted_frame(48, "text", 1)
    with_workers = train(fast_config("concat", epochs=2, num_workers=2), train_df, val_df, tmp_path / "w", progress=False)
    assert [(loader.num_workers, loader.persistent_workers) for loader in built] == [(2, True), (2, True)]
    built.clear()
    in_process = train(fast_config("concat", epochs=2), train_df, val_df, tmp_path / "p", progress=False)
    assert [loader.num_workers for loader in built] == [0, 0]
    for key in ("roc_auc", "log_loss", "threshold"):
        assert with_workers.val_metrics[key] == pytest.approx(in_process.val_metrics[key], abs=1e-6), key


@pytest.mark.slow
def test_resume_with_workers_and_accumulation_matches_uninterrupted_run(tmp_path):
    """Worker processes make the sampler run ahead of training, and 2 micro-batches share each optimiser step with
    dropout on: a run killed mid-epoch and resumed still ends with the uninterrupted run's metrics."""
    cfg = fast_config("concat", epochs=3, checkpoint_every_steps=2, num_workers=2, accumulate_grad_batches=2)
    cfg.model.dropout = 0.3
    write_train_inputs(tmp_path, cfg)
    reference = cli_train(tmp_path, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr[-2000:]
    # 160 rows / 16 = 10 micro-batches = 5 steps per epoch: step 7 is mid epoch 2; the last checkpoint is step 6.
    killed = _killed_run(tmp_path, tmp_path / "run", step=7)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = cli_train(tmp_path, tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_validation_metrics(tmp_path / "ref", tmp_path / "run")


@pytest.mark.slow
def test_tab_only_trains_and_predicts_without_a_text_column_and_never_tokenises(tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def refuse(*args, **kwargs):
        raise AssertionError("tab_only tokenised text")

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", refuse)
    train_df = planted_frame(200, "tab", 0).drop(columns=["dialogue"])
    val_df = planted_frame(100, "tab", 1).drop(columns=["dialogue"])
    result = train(fast_config("tab_only"), train_df, val_df, tmp_path / "model", progress=False)
    assert result.val_metrics["roc_auc"] > 0.95
    scores = bsmfusion.load(tmp_path / "model").predict_frame(val_df)
    assert scores["id"].tolist() == val_df["id"].tolist() and (scores["error"] == "").all()
    assert ((scores["prob_1"] > 0.5) == (val_df["price"] > 0)).mean() > 0.9
    from bsmfusion.serving.app import score_records

    served = score_records(bsmfusion.load(tmp_path / "model"), val_df.head(3).to_dict("records"))
    assert [r.get("error") for r in served] == [None] * 3
