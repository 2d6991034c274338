"""Tabular encoders: the default PLR encoder keeps every value's information, the design's stays for parity."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bsmfusion
from bsmfusion.config import load_config
from bsmfusion.data.preprocess import RowPreprocessor
from bsmfusion.data.tabular import MISSING_ID, UNKNOWN_ID, TabularPreprocessor
from bsmfusion.models import build_model
from bsmfusion.models.tabular_encoder import (CategoryIdDropout, PLRTabularEncoder, TabularEncoder,
                                              build_tab_encoder)
from tests.helpers import make_frame, tiny_config

SEED_PARITY = Path(__file__).resolve().parents[2] / "examples" / "seed_parity.yaml"


def test_one_numeric_column_keeps_distinct_values_distinct():
    """PLR embeds each value on its own; the design's LayerNorm across ONE row's features sees a single feature,
    subtracts it from itself (mean = x, variance = 0) and so maps every input to the same output."""
    values = torch.tensor([[-3.0], [-1.0], [-0.2], [0.0], [0.5], [1.3], [4.0]])  # 7 distinct inputs, B×1
    no_categoricals = torch.zeros((7, 0), dtype=torch.long)

    plr = build_tab_encoder("plr", 1, [], 8).eval()
    out = plr(values, no_categoricals)
    assert out.shape == (7, plr.output_dim) == (7, 8)
    gaps = torch.cdist(out, out) + torch.eye(7)  # pairwise distances, diagonal masked
    assert gaps.min().item() > 1e-4

    design = build_tab_encoder("design", 1, [], 8).eval()
    out = design(values, no_categoricals)
    torch.testing.assert_close(out, out[:1].expand(7, -1))  # one output for every input


def test_design_encoder_with_two_columns_keeps_only_the_sign_of_their_difference():
    design = build_tab_encoder("design", 2, [], 8).eval()
    same_sign = torch.tensor([[1.0, 2.0], [0.0, 5.0], [-3.0, -1.0]])  # first < second in every row
    out = design(same_sign, torch.zeros((3, 0), dtype=torch.long))
    torch.testing.assert_close(out, out[:1].expand(3, -1), atol=1e-4, rtol=0)
    plr_out = build_tab_encoder("plr", 2, [], 8).eval()(same_sign, torch.zeros((3, 0), dtype=torch.long))
    assert torch.cdist(plr_out, plr_out).fill_diagonal_(1.0).min().item() > 1e-4


def test_rare_categories_map_to_unknown_when_fitting_and_after_a_json_round_trip():
    frame = pd.DataFrame({"shop": ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] + [None]})
    prep = TabularPreprocessor.fit(frame, [], ["shop"], min_category_count=3)
    assert prep.vocab["shop"] == ["a", "b"] and prep.cardinalities == [4]
    _, ids = prep.transform(frame)
    assert ids[:, 0].tolist() == [2] * 5 + [3] * 3 + [UNKNOWN_ID] * 3 + [MISSING_ID]
    again = TabularPreprocessor.from_json(prep.to_json())
    assert again.min_category_count == 3
    np.testing.assert_array_equal(again.transform(frame)[1], ids)
    # a preprocessing.json written before the key existed still loads (its vocabulary already decides the ids)
    old = prep.to_dict()
    del old["min_category_count"]
    assert TabularPreprocessor.from_dict(old).min_category_count == 1


def test_min_category_count_flows_from_the_config(tokenizer):
    frame = make_frame(40).assign(category=["common"] * 36 + ["rare"] * 4)
    prep = RowPreprocessor.fit(tiny_config("tab_only", data={"min_category_count": 5}), tokenizer, frame)
    assert prep.tabular.vocab["category"] == ["common"]
    assert (prep.encode(frame).categorical[36:, 0] == UNKNOWN_ID).all()
    assert tiny_config().data.min_category_count == 5  # the default
    keep_all = RowPreprocessor.fit(tiny_config("tab_only", data={"min_category_count": 1}), tokenizer, frame)
    assert keep_all.tabular.vocab["category"] == ["common", "rare"]


def test_category_id_dropout_trains_the_unknown_row_only_in_train_mode():
    dropout = CategoryIdDropout(0.5)
    ids = torch.tensor([[0, 2], [3, 0], [2, 3]] * 200)  # B×Dc: missing (0) and known (2, 3) ids, never unknown
    torch.manual_seed(1)
    first = dropout(ids)
    torch.manual_seed(1)
    assert torch.equal(first, dropout(ids))  # deterministic under torch's seed
    replaced = first != ids
    assert (first[replaced] == UNKNOWN_ID).all() and 0.4 < replaced[ids >= 2].float().mean() < 0.6
    assert not replaced[ids == MISSING_ID].any()  # missingness is information: never replaced
    assert torch.equal(dropout.eval()(ids), ids)

    encoder = PLRTabularEncoder(1, [4, 4], 8, category_dropout=0.5).train()
    encoder(torch.randn(len(ids), 1), ids).sum().backward()
    for table in encoder.embeddings:
        assert table.weight.grad[UNKNOWN_ID].abs().sum() > 0


def test_unknown_and_missing_rows_change_during_training():
    """Rare values (fewer than min_category_count) become unknown ids in the training split itself, so one
    optimiser step on ordinary training rows moves the unknown and missing rows, with id dropout off."""
    frame = pd.DataFrame({"shop": ["a"] * 30 + ["rare1", "rare2", "rare3"] + [None] * 3, "x": np.linspace(-1, 1, 36)})
    prep = TabularPreprocessor.fit(frame, ["x"], ["shop"], min_category_count=5)
    numeric, categorical = (torch.from_numpy(a) for a in prep.transform(frame))
    assert (categorical[30:33, 0] == UNKNOWN_ID).all() and (categorical[33:, 0] == MISSING_ID).all()
    encoder = PLRTabularEncoder(prep.numeric_dim, prep.cardinalities, 8, category_dropout=0.0).train()
    head = torch.nn.Linear(8, 2)
    before = encoder.embeddings[0].weight.detach().clone()
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-2)
    labels = torch.tensor([0, 1] * 18)
    torch.nn.functional.cross_entropy(head(encoder(numeric, categorical)), labels).backward()
    optimizer.step()
    moved = (encoder.embeddings[0].weight.detach() - before).abs().sum(dim=1)
    assert moved[UNKNOWN_ID] > 0 and moved[MISSING_ID] > 0


def test_default_is_plr_and_the_design_keeps_its_parity_counts():
    assert isinstance(build_model(tiny_config("tab_only"), 3, [5]).tab_subnetwork, PLRTabularEncoder)
    cfg = load_config(SEED_PARITY, overrides={"model.fusion": "tab_only"})  # tab_only: no BERT to build
    assert cfg.model.tab_encoder == "design"
    design = build_model(cfg, 11, [])
    assert isinstance(design.tab_subnetwork, TabularEncoder)
    assert sum(p.numel() for p in design.tab_subnetwork.parameters()) == 1222  # LayerNorm(11) + Linear(11→100)
    with pytest.raises(ValueError, match="unknown model.tab_encoder 'mlp'"):
        build_tab_encoder("mlp", 1, [], 8)


# ------------------------------------------------------------------ planted non-linear signal vs a GBT
SHOP_EFFECT = {"s0": -1.5, "s1": -0.5, "s2": 0.0, "s3": 0.5, "s4": 1.5}


def nonlinear_frame(n: int, seed: int) -> pd.DataFrame:
    """label ~ Bernoulli(σ(±3 + shop effect)), the sign from (|x1| > 0.8) XOR (x2 > 0); x3 is noise.

    No single column and no linear score separates the classes; the dialogue is a constant dummy."""
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=(3, n))
    shop = rng.choice(list(SHOP_EFFECT), n)
    band = (np.abs(x1) > 0.8) ^ (x2 > 0)
    logit = np.where(band, 3.0, -3.0) + np.array([SHOP_EFFECT[s] for s in shop])
    label = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"id": np.arange(n) + 100_000 * seed, "dialogue": "BUYER: hello", "x1": x1, "x2": x2,
                         "x3": x3, "shop": shop, "label": label})


def gbt_test_auc(train: pd.DataFrame, test: pd.DataFrame) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    def features(frame):
        return frame[["x1", "x2", "x3"]].assign(shop=frame["shop"].map({s: i for i, s in enumerate(SHOP_EFFECT)}))

    gbt = HistGradientBoostingClassifier(categorical_features=[3], random_state=0).fit(features(train), train["label"])
    return roc_auc_score(test["label"], gbt.predict_proba(features(test))[:, 1])


@pytest.fixture
def one_thread():
    """A tiny MLP trains several times faster on one thread than on two cores shared with other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tab_only_learns_a_nonlinear_signal_as_well_as_gradient_boosting(tmp_path, one_thread):
    from sklearn.metrics import roc_auc_score

    from bsmfusion.workflows.train import train

    train_df, val_df, test_df = nonlinear_frame(3000, 0), nonlinear_frame(1000, 1), nonlinear_frame(2000, 2)
    cfg = tiny_config(
        "tab_only", data={"id": "id", "numeric": ["x1", "x2", "x3"], "categorical": ["shop"]},
        model={"hidden_dim": 32, "num_heads": 2, "dropout": 0.0},
        train={"precision": "fp32", "epochs": 30, "batch_size": 64, "head_lr": 3e-3, "patience": 5,
               "warmup_ratio": 0.0, "seed": 0},
    )
    train(cfg, train_df, val_df, tmp_path / "model", progress=False)
    probs = bsmfusion.load(tmp_path / "model").predict_frame(test_df)["prob_1"].to_numpy()
    model_auc = roc_auc_score(test_df["label"], probs)
    gbt_auc = gbt_test_auc(train_df, test_df)
    assert gbt_auc > 0.93  # the signal is learnable
    assert model_auc >= gbt_auc - 0.02, (model_auc, gbt_auc)
