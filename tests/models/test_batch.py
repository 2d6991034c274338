"""The typed `Batch`: what the collator builds, how it moves, and how its text form (not the presence of a dict key)
decides the classifier's path; one scoring interface (`eval`, `batch_scores`) for every engine."""
import numpy as np
import pytest
import torch

from bsmfusion.data import Collator, EncodedDataset
from bsmfusion.data.preprocess import RowPreprocessor
from bsmfusion.models import build_model
from bsmfusion.models.fusion import Batch, FusionOutput
from bsmfusion.models.fusion.base import TextForm
from bsmfusion.models.scores import score_table
from tests.helpers import make_frame, tiny_config


@pytest.fixture(scope="module")
def setup(tokenizer):
    cfg = tiny_config("gate")
    frame = make_frame(12)
    prep = RowPreprocessor.fit(cfg, tokenizer, frame)
    table = prep.encode(frame)
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities).eval()
    return cfg, prep, table, model, Collator.for_text(cfg.text, prep.pad_token_id)


def test_collator_builds_typed_batches_in_every_text_form(setup):
    cfg, prep, table, model, collate = setup
    items = [EncodedDataset(table)[i] for i in range(5)]
    batch = collate(items)
    assert isinstance(batch, Batch) and batch.text_form is TextForm.TOKENS and len(batch) == 5
    assert batch.input_ids.shape[0] == 5 and batch.input_ids.shape[1] <= cfg.text.max_chunks
    assert batch.labels.tolist() == table.labels[:5].tolist() and batch.index.tolist() == [0, 1, 2, 3, 4]
    assert batch.numeric.dtype == torch.float32 and batch.categorical.dtype == torch.int64
    vectors = [dict(item, thread_vector=np.ones(4, np.float32)) for item in items]
    assert collate(vectors).text_form is TextForm.THREAD_VECTORS and collate(vectors).input_ids is None
    chunked = [dict(item, chunk_vectors=np.ones((3, 4), np.float32), chunk_vector_mask=np.array([1, 1, 0], bool))
               for item in items]
    assert collate(chunked).text_form is TextForm.CHUNK_VECTORS and collate(chunked).chunk_vectors.shape == (5, 2, 4)
    assert collate([dict(item, chunks=None) for item in items]).text_form is TextForm.NONE


def test_to_moves_every_tensor_into_a_new_batch(setup):
    _, _, table, _, collate = setup
    batch = collate([EncodedDataset(table)[i] for i in range(3)])
    moved = batch.to(torch.device("meta"))
    assert moved is not batch and batch.input_ids.device.type == "cpu"
    assert all(getattr(moved, name).device.type == "meta"
               for name in ("numeric", "categorical", "index", "labels", "input_ids", "attention_mask", "chunk_mask"))
    assert moved.thread_vectors is None and moved.text_form is TextForm.TOKENS


def test_the_classifier_follows_the_text_form(setup):
    _, _, table, model, collate = setup
    batch = collate([EncodedDataset(table)[i] for i in range(4)])
    with torch.no_grad():
        tokens = model(batch)
        text = model.text_subnetwork
        chunks = text.encode_chunks(batch.input_ids, batch.attention_mask, batch.chunk_mask)
        # chunk vectors win over token ids when a batch holds both (what the chunk cache builds)
        both = batch.replace(chunk_vectors=chunks)
        assert both.text_form is TextForm.CHUNK_VECTORS
        torch.testing.assert_close(model(both).logits, tokens.logits, atol=1e-5, rtol=0)
        zeros = batch.replace(chunk_vectors=torch.zeros_like(chunks))
        assert not torch.allclose(model(zeros).logits, tokens.logits)  # the vectors, not the ids, were read
        reduced = batch.replace(thread_vectors=text.reduce_chunks(chunks, batch.chunk_mask))
        torch.testing.assert_close(model(reduced).logits, tokens.logits, atol=1e-5, rtol=0)
        with pytest.raises(ValueError, match="the model reads text, but the batch has none"):
            model(batch.replace(input_ids=None))


def test_score_table_runs_any_model_with_the_scoring_interface(setup):
    """No isinstance in the scoring loop: a duck-typed engine (as the ONNX `OnnxModel`) is scored the same way."""
    _, _, table, model, collate = setup

    class Engine:
        def __init__(self):
            self.evaluated, self.seen = False, []

        def eval(self):
            self.evaluated = True
            return self

        def batch_scores(self, batch, target=None):
            assert isinstance(batch, Batch) and target is None
            self.seen.append(batch.index.tolist())
            return model.batch_scores(batch)

    engine = Engine()
    scores = score_table(engine, table, collate, batch_size=5, precision="fp32")
    reference = score_table(model, table, collate, batch_size=5, precision="fp32")
    assert engine.evaluated and sorted(i for rows in engine.seen for i in rows) == list(range(len(table)))
    np.testing.assert_array_equal(scores.probs, reference.probs)
    np.testing.assert_array_equal(scores.text_contribution, reference.text_contribution)
    output, _ = model.explain(collate([EncodedDataset(table)[0]]))
    assert isinstance(output, FusionOutput)
