"""gbdt's text readers (`model.classical.gbdt_text`): which word columns `words` keeps, that it learns a signal
spread over many single words that the SVD misses, that `auto` keeps the design of lower CV log loss, and that the
sparse block keeps the contributions exact and survives storage."""
import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file

import bsmfusion
from bsmfusion.classical import member
from bsmfusion.classical.gbdt import booster_input
from bsmfusion.classical.gbdt_text import SvdText, WordText, reader_from_arrays
from bsmfusion.classical.train import fit_member, prepare
from bsmfusion.config import bundle_config
from bsmfusion.errors import DataError
from bsmfusion.evaluation.metrics import classification_metrics
from bsmfusion.workflows.train import train
from tests.helpers import classical_config, planted_offers, planted_phrases


def fitted(reader: str, cv_folds: int = 0, quoted: str = "off"):
    cfg = classical_config("gbdt")
    settings = cfg.model.classical
    settings.gbdt_text, settings.cv_folds, settings.quoted_numbers = reader, cv_folds, quoted
    return fit_member(cfg, prepare(cfg, planted_phrases(800, 0), planted_phrases(200, 1)))


def roc(model, frame) -> float:
    return classification_metrics(frame["label"].to_numpy(), model.score_frame(frame).probs)["roc_auc"]


def test_words_keeps_the_word_columns_in_at_least_min_rows_threads():
    word_dim = 3  # columns 3–4 are the char block: never kept
    tfidf = sp.csr_matrix(np.array([[0.5, 0.0, 0.1, 0.3, 0.2],
                                    [0.5, 0.0, 0.0, 0.3, 0.0],
                                    [0.0, 0.7, 0.2, 0.3, 0.0]]))
    reader = WordText.fit(tfidf[:, :word_dim], min_rows=2)
    assert reader.columns.tolist() == [0, 2] and reader.names() == ["word_0", "word_1"]
    assert WordText.fit(tfidf[:, 3:], min_rows=2, offset=3).columns.tolist() == [3]  # a block further right
    np.testing.assert_array_equal(reader.block(tfidf).toarray(), [[0.5, 0.1], [0.5, 0.0], [0.0, 0.2]])
    assert reader_from_arrays(reader.arrays()).columns.tolist() == [0, 2]
    assert isinstance(reader_from_arrays({"svd_components": np.eye(2)}), SvdText)  # bundles from before words


def test_words_learns_a_signal_spread_over_twelve_single_words_that_the_svd_misses():
    test_rows = planted_phrases(400, 2)
    words, info = fitted("words")
    svd, _ = fitted("svd")
    assert info["text"] == "words" and info["word_columns_kept"] >= 120  # the 120 words are in ≥ 20 threads each
    assert roc(words, test_rows) > 0.97 and roc(svd, test_rows) < 0.9


@pytest.mark.slow
def test_auto_keeps_the_reader_of_lower_cross_validated_log_loss():
    model, info = fitted("auto", cv_folds=3)
    losses = info["design_log_loss"]
    assert list(losses) == ["svd", "words"] and losses["words"] < losses["svd"] - 0.1
    assert info["text"] == "words" and isinstance(model.reader, WordText)
    assert roc(model, planted_phrases(400, 2)) > 0.97


def test_words_with_no_word_in_enough_threads_is_an_error_and_auto_leaves_it_out():
    cfg = classical_config("gbdt")
    cfg.model.classical.gbdt_text, cfg.model.classical.gbdt_min_data_in_leaf = "words", 1000
    with pytest.raises(DataError, match="no word n-gram is in 1000 training threads.*gbdt_text: svd"):
        fit_member(cfg, prepare(cfg, planted_phrases(300, 0), planted_phrases(100, 1)))
    cfg.model.classical.gbdt_text = "auto"
    model, info = fit_member(cfg, prepare(cfg, planted_phrases(300, 0), planted_phrases(100, 1)))
    assert list(info["design_log_loss"]) == ["svd"] and isinstance(model.reader, SvdText)


def test_a_bundle_from_before_gbdt_text_reads_as_svd_and_one_from_before_quoted_numbers_as_off():
    raw = classical_config("gbdt").to_dict()
    del raw["model"]["classical"]["gbdt_text"], raw["model"]["classical"]["quoted_numbers"]
    old = bundle_config(raw, "old/config.yaml").model.classical
    assert (old.gbdt_text, old.quoted_numbers) == ("svd", "off")
    raw["model"]["classical"]["gbdt_text"] = "words"
    assert bundle_config(raw, "new/config.yaml").model.classical.gbdt_text == "words"


def test_sparse_block_with_quoted_numbers_splits_exactly_and_round_trips(tmp_path, monkeypatch):
    cfg = classical_config("gbdt")
    cfg.model.classical.gbdt_text, cfg.model.classical.quoted_numbers = "words", "on"
    train_rows, val_rows, test_rows = planted_offers(600, 0), planted_offers(200, 1), planted_offers(150, 2)
    train(cfg, train_rows, val_rows, tmp_path / "m", progress=False)
    in_memory, _ = fit_member(cfg, prepare(cfg, train_rows, val_rows))  # the same deterministic fit, never stored
    model = bsmfusion.load(tmp_path / "m").bundle.model
    assert isinstance(model.reader, WordText) and sp.issparse(model.text_background)
    assert "word_columns" in load_file(str(tmp_path / "m" / "weights.safetensors"))
    text, tab = model.features(test_rows)
    assert sp.issparse(text)
    x = booster_input(text, tab, model.quoted, model.tabular)
    raw = model.booster.predict(x, raw_score=True)
    np.testing.assert_array_equal(raw, model.booster.predict(x.toarray(), raw_score=True))  # sparse 0 = value 0
    scores = model.score_frame(test_rows)
    np.testing.assert_allclose(scores.text_contribution + scores.tab_contribution + scores.baseline_score, raw,
                               atol=1e-6, rtol=0)
    assert roc(model, test_rows) > 0.95  # the quoted numbers still carry the offer signal
    stored = in_memory.score_frame(test_rows)  # storage lost nothing: reader, background, booster
    np.testing.assert_array_equal(scores.probs, stored.probs)
    np.testing.assert_allclose(scores.text_contribution, stored.text_contribution, atol=1e-12, rtol=0)
    monkeypatch.setattr(member, "CHUNK_EVALUATIONS", 500)  # the background averages in many sparse chunks
    chunked = model.score_frame(test_rows)
    np.testing.assert_allclose(chunked.text_contribution, scores.text_contribution, atol=1e-12, rtol=0)
    np.testing.assert_allclose(chunked.tab_contribution, scores.tab_contribution, atol=1e-12, rtol=0)
