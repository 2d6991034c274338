import pytest
import torch

from bsmfusion.data import Collator, EncodedDataset
from bsmfusion.data.preprocess import RowPreprocessor
from bsmfusion.models import build_model
from tests.helpers import PRECISIONS, make_frame, prob_tolerance, tiny_config


def setup(tokenizer, fusion="concat", **text):
    cfg = tiny_config(fusion, text=text)
    frame = make_frame(12)
    frame.loc[0, "dialogue"] = "BUYER: short"
    frame.loc[1, "dialogue"] = " <eos> ".join(f"SELLER: {'long message ' * 30}" for _ in range(4))
    frame.loc[2, "dialogue"] = ""
    prep = RowPreprocessor.fit(cfg, tokenizer, frame)
    table = prep.encode(frame)
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities).eval()
    collate = Collator.for_text(cfg.text, prep.text.pad_token_id)
    return cfg, prep, table, model, collate


def batch_of(table, collate, rows):
    ds = EncodedDataset(table)
    return collate([ds[i] for i in rows])


@pytest.mark.parametrize("fusion", ["concat", "gate", "moe", "cross_attn"])
@pytest.mark.parametrize("encode", ["packed", "plain"])
def test_batch_invariance_alone_vs_with_longer_threads(tokenizer, fusion, encode):
    _, _, table, model, collate = setup(tokenizer, fusion, encode=encode)
    assert len(table.threads[1].chunks) == 3 and len(table.threads[0].chunks) == 1 and table.threads[2].empty
    with torch.no_grad():
        full = model(batch_of(table, collate, range(12))).logits
        for row in (0, 2, 5):
            alone = model(batch_of(table, collate, [row])).logits
            torch.testing.assert_close(alone[0], full[row], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_reduce", ["masked_mean", "attention"])
def test_packed_equals_plain_path(tokenizer, chunk_reduce):
    _, _, table, model, collate = setup(tokenizer, encode="packed", chunk_reduce=chunk_reduce)
    model = model.float()
    batch = batch_of(table, collate, range(12))
    with torch.no_grad():
        if chunk_reduce == "attention":  # non-zero position embeddings, so positions matter
            model.text_subnetwork.chunk_attention.distance_from_end.weight.normal_(std=1.0)
        packed = model(batch).logits
        model.text_subnetwork.encode_mode = "plain"
        plain = model(batch).logits
        full_pad = Collator(collate.pad_token_id, 3, 16, pad_to_max=True)
        padded = model(batch_of(table, full_pad, range(12))).logits
    torch.testing.assert_close(packed, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)


def test_design_padded_mean_depends_on_batch_neighbours(tokenizer):
    """The design's plain mean over zero-padded chunks: a 1-chunk sample changes when batched with a 3-chunk one."""
    _, _, table, model, collate = setup(tokenizer, chunk_reduce="padded_mean")
    assert model.text_subnetwork.encode_mode == "plain"
    with torch.no_grad():
        alone = model(batch_of(table, collate, [0])).logits[0]
        together = model(batch_of(table, collate, [0, 1])).logits[0]
    assert (alone - together).abs().max() > 1e-4


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_pooling_options_give_B_by_H(tokenizer, pooling):
    _, _, table, model, collate = setup(tokenizer, pooling=pooling)
    batch = batch_of(table, collate, range(4))
    enc = model.text_subnetwork
    assert enc.output_dim == 8
    assert enc(batch.input_ids, batch.attention_mask, batch.chunk_mask).shape == (4, 8)
    assert model.tab_subnetwork.output_dim == 8


# --- chunk_reduce: attention -------------------------------------------------------------------------------------

def attention_pool(dim=6, positions=4, seed=0):
    from bsmfusion.models.text_encoder import ChunkAttentionPool

    torch.manual_seed(seed)
    pool = ChunkAttentionPool(dim, positions)
    with torch.no_grad():  # clearly non-zero positions, so order matters
        pool.index_from_start.weight.normal_(std=1.0)
        pool.distance_from_end.weight.normal_(std=1.0)
    return pool


def test_attention_positions_make_first_and_last_chunk_distinguishable():
    pool = attention_pool()
    vectors = torch.randn(1, 3, 6)
    mask = torch.ones(1, 3, dtype=torch.bool)
    index, distance = pool.chunk_positions(torch.tensor([[True, True, True, False]]))
    assert index[0, :3].tolist() == [0, 1, 2] and distance[0, :3].tolist() == [2, 1, 0]
    with torch.no_grad():
        forward, w_forward = pool(vectors, mask)
        backward, w_backward = pool(vectors.flip(1), mask)
        assert (forward - backward).abs().max() > 1e-3  # a reversed thread is a different thread
        assert not torch.allclose(w_forward, w_backward.flip(1))
        # without position embeddings the pool is order-blind (a permutation-invariant set function)
        pool.index_from_start.weight.zero_()
        pool.distance_from_end.weight.zero_()
        torch.testing.assert_close(pool(vectors, mask)[0], pool(vectors.flip(1), mask)[0], atol=1e-6, rtol=0)


def test_attention_ignores_padding_chunks_and_weights_sum_to_one_over_real_chunks():
    pool = attention_pool()
    vectors = torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with torch.no_grad():
        thread, weights = pool(vectors, mask)
        garbage = vectors.clone()
        garbage[0, 2:] = torch.randn(2, 6) * 1e3
        thread2, weights2 = pool(garbage, mask)
        trimmed, _ = pool(vectors[:1, :2], mask[:1, :2])
    assert weights.shape == (2, 4) and weights.dtype == torch.float32
    assert weights[0, 2:].abs().max() == 0
    torch.testing.assert_close(weights.sum(1), torch.ones(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(thread2, thread, atol=0, rtol=0)
    torch.testing.assert_close(trimmed[0], thread[0], atol=1e-6, rtol=0)
    # the result is a convex combination of the real chunk vectors
    torch.testing.assert_close(thread, (weights.unsqueeze(-1) * vectors).sum(1), atol=1e-6, rtol=0)


def test_attention_gradient_reaches_every_attention_parameter():
    pool = attention_pool()
    vectors = torch.randn(3, 4, 6, requires_grad=True)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    thread, _ = pool(vectors, mask)
    (thread * torch.randn_like(thread)).sum().backward()
    for name, param in pool.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert vectors.grad[1, 2:].abs().max() == 0  # nothing flows into padding slots


@pytest.mark.parametrize("encode", ["packed", "plain"])
def test_attention_batch_invariance_alone_vs_with_longer_and_shorter_threads(tokenizer, encode):
    _, _, table, model, collate = setup(tokenizer, "concat", encode=encode, chunk_reduce="attention")
    enc = model.text_subnetwork.float()
    assert enc.chunk_attention is not None and enc.encode_mode == encode
    with torch.no_grad():
        enc.chunk_attention.index_from_start.weight.normal_(std=1.0)
        enc.chunk_attention.distance_from_end.weight.normal_(std=1.0)
        full_batch = batch_of(table, collate, range(12))
        full, full_weights = enc.encode_with_chunk_weights(full_batch.input_ids, full_batch.attention_mask,
                                                           full_batch.chunk_mask)
        full_logits = model(full_batch).logits
        for row in (0, 1, 2, 5):  # 1 chunk, 3 chunks (longest), empty, typical
            b = batch_of(table, collate, [row])
            alone, alone_weights = enc.encode_with_chunk_weights(b.input_ids, b.attention_mask, b.chunk_mask)
            torch.testing.assert_close(alone[0], full[row], atol=1e-5, rtol=0)
            width = alone_weights.shape[1]
            torch.testing.assert_close(alone_weights[0], full_weights[row, :width], atol=1e-5, rtol=0)
            assert torch.all(full_weights[row, width:] == 0)
            torch.testing.assert_close(model(b).logits[0], full_logits[row], atol=1e-5, rtol=0)


def test_chunk_weights_of_the_mean_reduces(tokenizer):
    _, _, table, model, collate = setup(tokenizer)
    enc = model.text_subnetwork
    batch = batch_of(table, collate, [0, 1])
    with torch.no_grad():
        vectors, weights = enc.encode_with_chunk_weights(batch.input_ids, batch.attention_mask, batch.chunk_mask)
    assert weights.tolist()[0] == [1.0, 0.0, 0.0]
    torch.testing.assert_close(weights[1], torch.full((3,), 1 / 3))
    torch.testing.assert_close(vectors, enc(batch.input_ids, batch.attention_mask, batch.chunk_mask))


def test_freeze_lower_layers_stops_gradients_below_the_first_trained_layer(tokenizer):
    _, _, table, model, collate = setup(tokenizer)
    text = model.text_subnetwork
    text.freeze_lower_layers(1)  # the tiny BERT has 2 layers: embeddings and layer 0 frozen, layer 1 trains
    model.train()
    model.loss(model(batch_of(table, collate, range(12))), torch.tensor([0, 1] * 6)).backward()
    backbone = text.backbone
    frozen = [*backbone.embeddings.parameters(), *backbone.encoder.layer[0].parameters()]
    assert all(not p.requires_grad and p.grad is None for p in frozen)
    assert all(p.requires_grad and p.grad is not None for p in backbone.encoder.layer[1].parameters())
    assert text.projection.weight.grad is not None


def test_freeze_lower_layers_zero_freezes_nothing_and_too_many_is_a_config_error(tokenizer):
    from bsmfusion.errors import ConfigError

    _, _, _, model, _ = setup(tokenizer)
    text = model.text_subnetwork
    text.freeze_lower_layers(0)
    assert all(p.requires_grad for p in text.backbone.parameters())
    with pytest.raises(ConfigError, match=r"train.freeze_layers 3: the encoder has 2 transformer layers; set it to 0..2"):
        text.freeze_lower_layers(3)
    text.backbone.config.model_type = "deberta-v2"  # layers that need relative positions: not run apart
    with pytest.raises(ConfigError, match=r"train.freeze_layers 1: the encoder \(deberta-v2\) has no BERT-style layer "
                                          r"stack to freeze; set train.freeze_layers: 0"):
        text.freeze_lower_layers(1)


def test_frozen_layers_run_without_dropout_in_training_mode(tokenizer):
    _, _, table, model, collate = setup(tokenizer)
    text = model.text_subnetwork
    assert text.backbone.config.hidden_dropout_prob > 0  # the tiny BERT drops out when it trains
    batch = batch_of(table, collate, range(12))
    text.freeze_lower_layers(2)
    model.train()
    assert not text.backbone.encoder.layer[1].training and text.training and text.dropout.training
    with torch.no_grad():
        first, second = (text.encode_chunks(batch.input_ids, batch.attention_mask, batch.chunk_mask) for _ in "ab")
    torch.testing.assert_close(first, second, atol=0, rtol=0)  # every backbone layer frozen: no dropout anywhere


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
@pytest.mark.parametrize("chunk_reduce", ["masked_mean", "attention"])
def test_the_frozen_layers_output_gives_what_the_tokens_give(tokenizer, pooling, chunk_reduce, precision):
    """Batches carrying the frozen layers' output (train.freeze_layers with its cache), computed in the training
    precision, score as token batches do: threads of 1 to 3 chunks (order-sensitive chunk positions), an empty one,
    in one batch and alone."""
    from bsmfusion.data.batch import TextForm
    from bsmfusion.precision import resolve_precision
    from bsmfusion.training.frozen_layers import attach_frozen_states

    _, _, table, model, collate = setup(tokenizer, pooling=pooling, chunk_reduce=chunk_reduce)
    text = model.text_subnetwork
    if chunk_reduce == "attention":  # positions that matter: a chunk out of order would change the thread vector
        with torch.no_grad():
            text.chunk_attention.index_from_start.weight.normal_(std=1.0)
            text.chunk_attention.distance_from_end.weight.normal_(std=1.0)
    text.freeze_lower_layers(1)
    used = resolve_precision(precision)
    tokens = batch_of(table, collate, range(12))
    assert attach_frozen_states(text, (table,), collate, precision=used, device=torch.device("cpu"), budget_gib=1.0)
    assert [len(states) for states in table.frozen_states] == [len(t.chunks) for t in table.threads]
    frozen = batch_of(table, collate, range(12))
    assert frozen.text_form is TextForm.FROZEN_LAYERS and frozen.frozen_hidden.shape[0] == int(frozen.chunk_mask.sum())
    tolerance = prob_tolerance(precision)
    with torch.no_grad(), used.autocast("cpu"):
        expected = torch.softmax(model(tokens).logits.float(), -1)
        torch.testing.assert_close(torch.softmax(model(frozen).logits.float(), -1), expected, atol=tolerance, rtol=0)
        for rows in ([1], [0, 2, 5]):  # and alone or in smaller batches
            got = torch.softmax(model(batch_of(table, collate, rows)).logits.float(), -1)
            torch.testing.assert_close(got, expected[rows], atol=tolerance, rtol=0)


def test_frozen_layer_states_over_the_budget_are_not_kept(tokenizer):
    from bsmfusion.precision import resolve_precision
    from bsmfusion.training.frozen_layers import attach_frozen_states

    _, _, table, model, collate = setup(tokenizer)
    model.text_subnetwork.freeze_lower_layers(1)
    assert not attach_frozen_states(model.text_subnetwork, (table,), collate, precision=resolve_precision("fp32"),
                                    device=torch.device("cpu"), budget_gib=0.0)
    assert table.frozen_states is None and batch_of(table, collate, [0]).frozen_hidden is None


def test_frozen_states_key_follows_the_frozen_weights_and_rows_only(tokenizer):
    from bsmfusion.precision import resolve_precision
    from bsmfusion.training.frozen_layers import states_key

    _, prep, table, model, _ = setup(tokenizer)
    text, fp32 = model.text_subnetwork, resolve_precision("fp32")
    text.freeze_lower_layers(1)
    key = states_key(text, table, fp32)
    with torch.no_grad():
        text.backbone.encoder.layer[1].output.dense.weight.add_(1.0)  # a trained layer: the states stay valid
    assert states_key(text, table, fp32) == key
    with torch.no_grad():
        text.backbone.encoder.layer[0].output.dense.weight.add_(1.0)  # a frozen one: they do not
    assert states_key(text, table, fp32) != key
    other_rows = prep.encode(make_frame(12, seed=1))
    assert states_key(text, other_rows, fp32) != states_key(text, table, fp32)
