import pytest
import torch

from bsmfusion.data import Collator, EncodedDataset
from bsmfusion.data.preprocess import TablePreprocessor
from bsmfusion.models import build_model
from tests.conftest import make_frame, tiny_config


def setup(tokenizer, fusion="concat", **text):
    cfg = tiny_config(fusion, text=text)
    frame = make_frame(12)
    frame.loc[0, "dialogue"] = "BUYER: short"
    frame.loc[1, "dialogue"] = " <eos> ".join(f"SELLER: {'long message ' * 30}" for _ in range(4))
    frame.loc[2, "dialogue"] = ""
    prep = TablePreprocessor.fit(cfg, tokenizer, frame)
    table = prep.encode(frame)
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities).eval()
    collate = Collator(prep.text.pad_token_id, cfg.text.max_chunks, cfg.text.chunk_tokens)
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


def test_packed_equals_plain_path(tokenizer):
    _, _, table, model, collate = setup(tokenizer, encode="packed")
    batch = batch_of(table, collate, range(12))
    with torch.no_grad():
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
    assert enc(batch["input_ids"], batch["attention_mask"], batch["chunk_mask"]).shape == (4, 8)
    assert model.tab_subnetwork.output_dim == 8
