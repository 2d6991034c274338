import json

import numpy as np
import pytest

from bsmfusion.cli import main
from bsmfusion.data.io import write_table
from bsmfusion.workflows.train import train
from tests.helpers import fast_config, planted_frame


@pytest.mark.slow
def test_frozen_encoder_trains_only_the_head_and_caches_vectors(tmp_path):
    cache = tmp_path / "cache"
    cfg = fast_config("concat", epochs=8, freeze_encoder=True, embedding_cache=str(cache))
    import bsmfusion

    result = train(cfg, planted_frame(120, "tab", 0), planted_frame(60, "tab", 1), tmp_path / "m", progress=False)
    cached = sorted(cache.glob("threads-*.npy"))
    assert len(cached) == 2  # train and val
    vectors = np.load(cached[0])
    assert vectors.shape[1] == 32 and np.isfinite(vectors).all()
    assert result.val_metrics["roc_auc"] > 0.85
    # a second run reuses the cache (same files, no new ones)
    train(cfg, planted_frame(120, "tab", 0), planted_frame(60, "tab", 1), tmp_path / "m2", progress=False)
    assert sorted(cache.glob("threads-*.npy")) == cached
    # and scoring the bundle through the full encoder path agrees with the cached-vector path
    frame = planted_frame(60, "tab", 1)
    full = bsmfusion.load(tmp_path / "m2").predict_frame(frame)["prob_1"].to_numpy()
    assert abs(json.loads((tmp_path / "m2" / "metrics.json").read_text())["validation"]["n"] - 60) == 0
    from bsmfusion.evaluation.metrics import classification_metrics

    m = classification_metrics(frame["label"].to_numpy(), np.stack([1 - full, full], 1), 0.5)
    assert m["roc_auc"] == pytest.approx(result.val_metrics["roc_auc"], abs=1e-6)


@pytest.mark.slow
def test_frozen_backbone_is_unchanged_by_training(tmp_path):
    import bsmfusion
    import torch

    cfg = fast_config("gate", epochs=2, freeze_encoder=True, embedding_cache=str(tmp_path / "c"))
    train(cfg, planted_frame(80, "tab", 0), planted_frame(40, "tab", 1), tmp_path / "a", progress=False)
    cfg2 = fast_config("gate", epochs=4, freeze_encoder=True, embedding_cache=str(tmp_path / "c"))
    train(cfg2, planted_frame(80, "tab", 0), planted_frame(40, "tab", 1), tmp_path / "b", progress=False)
    a = bsmfusion.load(tmp_path / "a").bundle.model.text_subnetwork.backbone.state_dict()
    b = bsmfusion.load(tmp_path / "b").bundle.model.text_subnetwork.backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = bsmfusion.load(tmp_path / "a").bundle.model.fusion.state_dict()
    hb = bsmfusion.load(tmp_path / "b").bundle.model.fusion.state_dict()
    assert any(not torch.equal(ha[k], hb[k]) for k in ha)


@pytest.mark.slow
def test_compare_ranks_the_six_neural_models_and_the_classical_members(tmp_path, capsys):
    import yaml

    cfg = fast_config("concat", embedding_cache=str(tmp_path / "cache"))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    for name, seed, n in (("train", 0, 200), ("val", 1, 80), ("test", 2, 80)):
        write_table(planted_frame(n, "tab", seed), tmp_path / f"{name}.csv")
    code = main(["compare", "--config", str(tmp_path / "cfg.yaml"), "--train", str(tmp_path / "train.csv"),
                 "--val", str(tmp_path / "val.csv"), "--test", str(tmp_path / "test.csv"), "--out", str(tmp_path / "cmp"),
                 "--epochs", "6"])
    assert code == 0
    board = json.loads((tmp_path / "cmp" / "leaderboard.json").read_text())
    assert sorted(r["model"] for r in board) == sorted(["concat", "gate", "moe", "cross_attn", "text_only", "tab_only",
                                                        "tfidf_lr", "gbdt"])
    assert [r["roc_auc"] for r in board] == sorted((r["roc_auc"] for r in board), reverse=True)
    by_model = {r["model"]: r for r in board}
    assert by_model["tab_only"]["roc_auc"] > 0.9 and by_model["text_only"]["roc_auc"] < 0.75
    assert by_model["tfidf_lr"]["roc_auc"] > 0.9 and by_model["gbdt"]["text_share_mean"] < 0.3
    assert "| rank | model |" in (tmp_path / "cmp" / "leaderboard.md").read_text()
    assert "leaderboard:" in capsys.readouterr().out


@pytest.mark.slow
def test_frozen_encoder_with_attention_reduce_caches_chunk_vectors_and_trains_the_attention(tmp_path):
    import bsmfusion
    import torch

    from tests.helpers import tiny_config

    def config(epochs):
        return tiny_config(
            "concat", data={"id": "id"},
            text={"pooling": "cls", "max_chunks": 3, "chunk_tokens": 12, "chunk_reduce": "attention"},
            train={"epochs": epochs, "batch_size": 16, "precision": "fp32", "lr": 3e-3, "head_lr": 3e-3,
                   "patience": 50, "warmup_ratio": 0.0, "freeze_encoder": True,
                   "embedding_cache": str(tmp_path / "cache")},
        )

    train_frame, val_frame = planted_frame(80, "tab", 0), planted_frame(40, "tab", 1)
    train(config(1), train_frame, val_frame, tmp_path / "a", progress=False)
    cached = sorted((tmp_path / "cache").glob("chunks-*.npz"))
    assert len(cached) == 2 and not list((tmp_path / "cache").glob("threads-*.npy"))  # train and val, N×C×D
    with np.load(cached[0]) as stored:
        vectors, mask = stored["vectors"], stored["mask"]
    assert vectors.ndim == 3 and vectors.shape[2] == 32 and mask.shape == vectors.shape[:2]
    assert mask[:, 0].all() and (mask.sum(1) > 1).mean() > 0.5 and np.isfinite(vectors).all()
    assert np.abs(vectors[~mask]).max(initial=0) == 0

    result_b = train(config(3), train_frame, val_frame, tmp_path / "b", progress=False)
    assert sorted((tmp_path / "cache").glob("chunks-*.npz")) == cached  # reused
    a = bsmfusion.load(tmp_path / "a").bundle.model.text_subnetwork
    b = bsmfusion.load(tmp_path / "b").bundle.model.text_subnetwork
    backbone_a, backbone_b = a.backbone.state_dict(), b.backbone.state_dict()
    assert all(torch.equal(backbone_a[k], backbone_b[k]) for k in backbone_a)
    attention_a, attention_b = a.chunk_attention.state_dict(), b.chunk_attention.state_dict()
    assert any(not torch.equal(attention_a[k], attention_b[k]) for k in attention_a)  # the learned reduce trained
    # scoring the bundle through the full encoder path agrees with the cached chunk-vector path used in training
    from bsmfusion.evaluation.metrics import classification_metrics

    full = bsmfusion.load(tmp_path / "b").predict_frame(val_frame)["prob_1"].to_numpy()
    m = classification_metrics(val_frame["label"].to_numpy(), np.stack([1 - full, full], 1), 0.5)
    assert m["roc_auc"] == pytest.approx(result_b.val_metrics["roc_auc"], abs=1e-6)
