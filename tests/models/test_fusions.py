import json

import pytest
import torch

from bsmfusion.data import Collator, EncodedDataset
from bsmfusion.data.preprocess import RowPreprocessor
from bsmfusion.models import FUSIONS, build_model
from bsmfusion.models.fusion import Fusion, FusionDims, FusionOutput, build_fusion, register_fusion
from tests.helpers import make_frame, tiny_config

ALL = ["concat", "gate", "moe", "cross_attn", "text_only", "tab_only"]


def batch_for(cfg, tokenizer, n=6):
    frame = make_frame(n)
    prep = RowPreprocessor.fit(cfg, tokenizer, frame)
    table = prep.encode(frame)
    collate = Collator.for_text(cfg.text, prep.pad_token_id)
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
    model.loss(out, batch.labels).backward()
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
    expected = {"gate": {"gate": (6, 8), "gate_mean": (6,)}, "moe": {"router_probabilities": (6, 2)},
                "cross_attn": {"text2tab_attention": (6,), "tab2text_attention": (6,)}}
    for fusion, shapes in expected.items():
        cfg = tiny_config(fusion)
        prep, batch = batch_for(cfg, tokenizer)
        out = model_for(cfg, prep)(batch)
        assert {k: tuple(v.shape) for k, v in out.details.items()} == shapes
    cfg = tiny_config("moe")
    prep, batch = batch_for(cfg, tokenizer)
    model = model_for(cfg, prep).eval()
    out = model(batch)
    torch.testing.assert_close(out.details["router_probabilities"].sum(1), torch.ones(6))
    explained, _ = model.explain(batch)  # the details of the real rows, not of the four stacked copies
    torch.testing.assert_close(explained.details["router_probabilities"], out.details["router_probabilities"])


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("fusion", ALL)
def test_contributions_and_baseline_add_up_to_the_score(fusion, num_classes, tokenizer):
    cfg = tiny_config(fusion)
    prep, batch = batch_for(cfg, tokenizer)
    cfg = tiny_config(fusion, model={"num_classes": num_classes})
    model = model_for(cfg, prep).eval()
    model.set_baseline(torch.randn(8) if model.text_subnetwork else None, torch.randn(8) if model.tab_subnetwork else None)
    with torch.no_grad():
        logits = model(batch).logits
        out, parts = model.explain(batch)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=0)
    expected = logits[:, 1] - logits[:, 0] if num_classes == 2 else logits.max(dim=1).values
    torch.testing.assert_close(parts.score, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(parts.text + parts.tab + parts.baseline_score, expected, atol=1e-5, rtol=0)
    if not FUSIONS[fusion].uses_text:
        assert parts.text.abs().max() == 0 and (parts.text_share == 0).all()
    if not FUSIONS[fusion].uses_tab:
        assert parts.tab.abs().max() == 0 and (parts.text_share == 1).all()


@pytest.mark.parametrize("fusion", ["concat", "gate", "moe", "cross_attn"])
def test_a_modality_the_head_cannot_see_contributes_nothing(fusion):
    """Probes from the issue: concat's shift common to both classes, moe's tiny text expert, cross_attn with an
    all-zero text input. A text embedding equal to its baseline carries exactly zero, whatever the fusion."""
    dims = FusionDims(text_dim=8, tab_dim=8, fusion_dim=8, num_classes=2)
    head = build_fusion(fusion, dims).eval()
    from bsmfusion.models.contributions import shapley_split

    tab, text_base, tab_base = torch.randn(5, 8), torch.zeros(8), torch.randn(8)
    _, parts = shapley_split(head, torch.zeros(5, 8), tab, text_base, tab_base)
    assert parts.text.abs().max() == 0 and (parts.text_share == 0).all()
    if fusion == "concat":  # a text embedding that moves both classes' logits equally moves no log-odds
        with torch.no_grad():
            head.final_merge_network[-1].weight[:, :8] = torch.randn(8)  # same text row for both classes
        _, parts = shapley_split(head, torch.randn(5, 8).abs(), tab, text_base, tab_base)
        assert parts.text.abs().max() < 1e-5


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
            return FusionOutput(self.classifier(text + tab))

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


@pytest.fixture
def my_fusion():
    """A fusion registered by user code, outside the package (removed again after the test)."""

    @register_fusion("my_fusion")
    class MyFusion(Fusion):
        def __init__(self, dims):
            super().__init__(dims)
            self.classifier = torch.nn.Linear(dims.fusion_dim, dims.num_classes)

        def forward(self, text, tab):
            logits = self.classifier(text + tab)
            return FusionOutput(logits)

    yield MyFusion
    FUSIONS.pop("my_fusion")


def test_fusion_registered_by_user_code_is_usable_from_a_config(my_fusion, tmp_path):
    from bsmfusion.workflows.train import train
    from tests.helpers import fast_config, planted_frame

    cfg = tiny_config("my_fusion")
    assert cfg.model.fusion == "my_fusion" and cfg.model.uses_text
    model = build_model(cfg, 2, [4])
    assert type(model.fusion) is my_fusion and model.text_subnetwork is not None and model.tab_subnetwork is not None
    result = train(fast_config("my_fusion", epochs=1), planted_frame(48, "text", 0), planted_frame(24, "text", 1),
                   tmp_path / "model", progress=False)
    assert result.epochs_run == 1 and 0.0 <= result.val_metrics["roc_auc"] <= 1.0
    assert json.loads((tmp_path / "model" / "meta.json").read_text())["fusion"] == "my_fusion"


def test_unknown_fusion_in_a_config_lists_the_registered_ones(my_fusion):
    from bsmfusion.config import config_from_dict
    from bsmfusion.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": {"fusion": "sum"}})
    message = str(err.value)
    assert "\n" not in message and "'model.fusion'" in message and "'sum'" in message
    assert "choose one of " + ", ".join(sorted(FUSIONS)) in message and "my_fusion" in message


@pytest.mark.parametrize("fusion", ALL)
def test_model_dropout_reaches_every_fusion_head(fusion):
    """`model.dropout` is applied inside each head: train-mode outputs vary, eval-mode outputs do not."""
    dims = FusionDims(text_dim=16, tab_dim=16, fusion_dim=16, num_classes=2, dropout=0.5)
    head = build_fusion(fusion, dims)
    text, tab = torch.randn(32, 16), torch.randn(32, 16)
    head.train()
    assert not torch.equal(head(text, tab).logits, head(text, tab).logits)
    head.eval()
    assert torch.equal(head(text, tab).logits, head(text, tab).logits)
    no_dropout = build_fusion(fusion, FusionDims(16, 16, 16, 2, dropout=0.0)).train()
    assert torch.equal(no_dropout(text, tab).logits, no_dropout(text, tab).logits)


def test_builtin_fusion_table_matches_the_registry():
    """`kinds.BUILTIN_FUSIONS` lets config validation skip importing torch; it must say what the classes say."""
    from bsmfusion.models.fusion import fusion_class
    from bsmfusion.kinds import BUILTIN_FUSIONS

    assert set(BUILTIN_FUSIONS) <= set(FUSIONS)
    assert {name: fusion_class(name).uses_text for name in BUILTIN_FUSIONS} == BUILTIN_FUSIONS
    shipped = {name for name, cls in FUSIONS.items() if cls.__module__.startswith("bsmfusion.models.fusion.")}
    assert shipped == set(BUILTIN_FUSIONS)  # a fusion added to the package is added to the table too
