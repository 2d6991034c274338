"""Modality contributions mean the same thing for every fusion: planted signals, end to end."""
import numpy as np
import pytest

import bsmfusion
from bsmfusion.workflows.train import train
from tests.helpers import fast_config, planted_frame


@pytest.mark.slow
@pytest.mark.parametrize("fusion", ["concat", "gate", "moe", "cross_attn"])
def test_text_share_follows_the_planted_signal(tmp_path, fusion):
    """label = a numeric column only → the dialogue's mean share ≤ 0.2; label = a keyword only → ≥ 0.8.
    (Before the Shapley split, the old per-fusion `text_weight` gave 0.36 / 0.35 / 0.59 on a numeric-only task.)"""
    for signal in ("tab", "text"):
        out = tmp_path / signal
        train(fast_config(fusion, epochs=5), planted_frame(256, signal, 0), planted_frame(100, signal, 1), out,
              progress=False)
        predictor = bsmfusion.load(out)
        test = planted_frame(200, signal, 2)
        scored = predictor.predict_frame(test)
        share = scored["text_share"].mean()
        assert (share <= 0.2) if signal == "tab" else (share >= 0.8), (signal, share)
        # the split adds up: text + tab + the model's score at the baseline = the row's log-odds
        scores = predictor.score_frame(test)
        log_odds = np.log(scores.probs[:, 1].astype(np.float64)) - np.log(scores.probs[:, 0].astype(np.float64))
        total = scores.text_contribution + scores.tab_contribution + scores.baseline_score
        sure = (scores.probs[:, 1] > 1e-3) & (scores.probs[:, 1] < 1 - 1e-3)  # float32 probs lose log-odds digits beyond
        np.testing.assert_allclose(total[sure], log_odds[sure], atol=1e-4)
        np.testing.assert_allclose(scored["text_contribution"], scores.text_contribution, atol=1e-6)
