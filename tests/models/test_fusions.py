import pytest
import torch

from bsmfusion.data import Collator, EncodedDataset
from bsmfusion.data.preprocess import TablePreprocessor
from bsmfusion.models import FUSIONS, build_model
from bsmfusion.models.fusion import Fusion, FusionDims, FusionOutput, build_fusion, register_fusion
from tests.conftest import make_frame, tiny_config

ALL = ["concat", "gate", "moe", "cross_attn", "text_only", "tab_only"]


def batch_for(cfg, tokenizer, n=6):
    frame = make_frame(n)
    prep = TablePreprocessor.fit(cfg, tokenizer, frame)
    table = prep.encode(frame)
    collate = Collator(prep.text.pad_token_id, cfg.text.max_chunks, cfg.text.chunk_tokens)
    batch = collate([EncodedDataset(table)[i] for i in range(n)])
    return prep, batch


def model_for(cfg, prep):
    return build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities)


def grad_norm(module):
    return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("fusion", ALL)
def test_forward_backward_reaches_every_used_part(fusion, tokenizer):
    cfg = tiny_config(fusion)
    prep, batch = batch_for(cfg, tokenizer)
    model = model_for(cfg, prep)
    out = model(batch)
    assert isinstance(out, FusionOutput)
    assert out.logits.shape == (6, 2)
    assert out.text_weight.shape == (6,)
    assert ((out.text_weight >= 0) & (out.text_weight <= 1)).all()
    model.loss(out, batch["labels"]).backward()
    assert grad_norm(model.fusion) > 0
    if FUSIONS[fusion].uses_text:
        assert grad_norm(model.text_subnetwork.backbone.embeddings) > 0
        assert grad_norm(model.text_subnetwork.projection) > 0
    else:
        assert model.text_subnetwork is None
    if FUSIONS[fusion].uses_tab:
        assert grad_norm(model.tab_subnetwork) > 0
        assert model.tab_subnetwork.embeddings[0].weight.grad.abs().sum() > 0
    else:
        assert model.tab_subnetwork is None


def test_contribution_details_per_fusion(tokenizer):
    expected = {"gate": {"gate": (6, 8), "gate_mean": (6,)}, "moe": {"router": (6, 2)},
                "cross_attn": {"text2tab_attention": (6,), "tab2text_attention": (6,)}}
    for fusion, shapes in expected.items():
        cfg = tiny_config(fusion)
        prep, batch = batch_for(cfg, tokenizer)
        out = model_for(cfg, prep)(batch)
        assert {k: tuple(v.shape) for k, v in out.details.items()} == shapes
    cfg = tiny_config("moe")
    prep, batch = batch_for(cfg, tokenizer)
    out = model_for(cfg, prep)(batch)
    torch.testing.assert_close(out.text_weight, out.details["router"][:, 0])
    torch.testing.assert_close(out.details["router"].sum(1), torch.ones(6))


def test_concat_text_weight_is_exact_logit_decomposition():
    dims = FusionDims(text_dim=4, tab_dim=4, fusion_dim=4, num_classes=2)
    fusion = build_fusion("concat", dims)
    text, tab = torch.randn(3, 4), torch.zeros(3, 4)
    assert torch.allclose(fusion(text.abs() + 0.1, tab).text_weight, torch.ones(3))
    assert torch.allclose(fusion(tab, text.abs() + 0.1).text_weight, torch.zeros(3))


def test_cross_attention_query_key_projections_get_no_gradient():
    """One token per side: softmax over one key is exactly 1, so q/k projections are dead (the design's flaw)."""
    dims = FusionDims(text_dim=8, tab_dim=8, fusion_dim=8, num_classes=2, num_heads=2)
    fusion = build_fusion("cross_attn", dims)
    out = fusion(torch.randn(5, 8), torch.randn(5, 8))
    torch.testing.assert_close(out.details["text2tab_attention"], torch.ones(5))
    out.logits.sum().backward()
    for mha in (fusion.cross_att.text2tab, fusion.cross_att.tab2text):
        width = 8
        qk_grad = mha.in_proj_weight.grad[: 2 * width]
        v_grad = mha.in_proj_weight.grad[2 * width:]
        assert qk_grad.abs().max().item() == 0.0
        assert v_grad.abs().max().item() > 0.0


def test_registry_adds_a_fusion_with_one_class():
    @register_fusion("test_sum")
    class SumFusion(Fusion):
        def __init__(self, dims):
            super().__init__(dims)
            self.classifier = torch.nn.Linear(dims.fusion_dim, dims.num_classes)

        def forward(self, text, tab):
            return FusionOutput(self.classifier(text + tab), torch.full((text.shape[0],), 0.5))

    try:
        fusion = build_fusion("test_sum", FusionDims(4, 4, 4, 3))
        assert fusion(torch.randn(2, 4), torch.randn(2, 4)).logits.shape == (2, 3)
        with pytest.raises(ValueError, match="registered twice"):
            register_fusion("test_sum")(SumFusion)
    finally:
        FUSIONS.pop("test_sum")
    with pytest.raises(ValueError, match="unknown model.fusion 'nope'"):
        build_fusion("nope", FusionDims(4, 4, 4, 2))


def test_fusion_needing_tabular_features_without_any_is_refused(tokenizer):
    cfg = tiny_config("gate", data={"numeric": [], "categorical": []})
    with pytest.raises(ValueError, match="needs tabular features"):
        build_model(cfg, 0, [])
    assert build_model(tiny_config("text_only", data={"numeric": [], "categorical": []}), 0, []).tab_subnetwork is None
