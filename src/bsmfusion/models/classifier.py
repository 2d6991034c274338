"""`MultimodalClassifier`: text encoder + tabular encoder + one registered fusion, as plain nn.Modules."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

from ..config import Config
from ..data.batch import Batch, TextForm
from .backbone import build_backbone
from .contributions import Contributions, shapley_split
from .fusion import FusionDims, FusionOutput, build_fusion, fusion_class
from .tabular_encoder import build_tab_encoder
from .text_encoder import TextEncoder


class MultimodalClassifier(nn.Module):
    """Composes the design's sub-networks under the design's names.

    * `text_subnetwork`: `TextEncoder` (`B×C×T` → `B×H`), absent for ``tab_only``;
    * `tab_subnetwork`: the `model.tab_encoder` (`B×Dn, B×Dc` → `B×H`; `PLRTabularEncoder` or the design's
      `TabularEncoder`), absent for ``text_only``;
    * `fusion`: a registered `Fusion` whose own children are the design's fusion parts;
    * `loss_op`: cross-entropy (class weights are a buffer, set by training);
    * `text_baseline`, `tab_baseline` (buffers, `H`): the mean training embeddings, the reference point of the
      per-row modality contributions (`explain`). Set after training by `set_baseline`.
    """

    def __init__(self, text_encoder: TextEncoder | None, tab_encoder: nn.Module | None, fusion: nn.Module):
        super().__init__()
        self.text_subnetwork = text_encoder
        self.tab_subnetwork = tab_encoder
        self.fusion = fusion
        self.loss_op = nn.CrossEntropyLoss()
        self.register_buffer("text_baseline", torch.zeros(text_encoder.output_dim if text_encoder is not None else 0))
        self.register_buffer("tab_baseline", torch.zeros(tab_encoder.output_dim if tab_encoder is not None else 0))

    def set_baseline(self, text_mean: torch.Tensor | None, tab_mean: torch.Tensor | None) -> None:
        """Store the training means of the text and tabular embeddings (`H` each; None for an absent modality)."""
        if text_mean is not None:
            self.text_baseline.copy_(text_mean)
        if tab_mean is not None:
            self.tab_baseline.copy_(tab_mean)

    def set_class_weights(self, weights: torch.Tensor | None) -> None:
        self.loss_op = nn.CrossEntropyLoss(weight=weights)

    def encode_text(self, batch: Batch) -> torch.Tensor | None:
        """`B×H` text embeddings from whichever form the batch's text comes in (`Batch.text_form`)."""
        text = self.text_subnetwork
        if text is None:
            return None
        form = batch.text_form
        if form is TextForm.THREAD_VECTORS:  # frozen-encoder fast path: chunk reduce already done
            return text.project(batch.thread_vectors)
        if form is TextForm.CHUNK_VECTORS:  # frozen encoder or chunk cache: B×C×D chunk vectors, reduce them
            return text.project(text.reduce_chunks(batch.chunk_vectors, batch.chunk_mask))
        if form is TextForm.FROZEN_LAYERS:  # training with train.freeze_layers: the layers above the frozen ones
            return text.forward_from_frozen(batch.frozen_hidden, batch.attention_mask, batch.chunk_mask)
        if form is TextForm.TOKENS:
            return text(batch.input_ids, batch.attention_mask, batch.chunk_mask)
        raise ValueError("the model reads text, but the batch has none (a table encoded without text columns)")

    def encode_tab(self, batch: Batch) -> torch.Tensor | None:
        if self.tab_subnetwork is None:
            return None
        return self.tab_subnetwork(batch.numeric, batch.categorical)

    def embeddings(self, batch: Batch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(`B×H` text, `B×H` tab) embeddings, None for an absent modality; one dtype when both are present."""
        text, tab = self.encode_text(batch), self.encode_tab(batch)
        if text is not None and tab is not None and text.dtype != tab.dtype:
            text, tab = text.float(), tab.float()
        return text, tab

    def forward(self, batch: Batch) -> FusionOutput:
        return self.fusion(*self.embeddings(batch))

    def explain(self, batch: Batch,
                target: torch.Tensor | None = None) -> tuple[FusionOutput, Contributions]:
        """`forward` plus the per-row Shapley split of the decision between dialogue and tabular facts (of class
        `target`'s logit when given, multiclass)."""
        text, tab = self.embeddings(batch)
        return shapley_split(self.fusion, text, tab, self.text_baseline, self.tab_baseline, target)

    def batch_scores(self, batch: Batch, target: torch.Tensor | None = None) -> tuple:
        """The scoring interface every engine shares (`models.scores.score_table`; the ONNX engine's `OnnxModel`
        has the same): numpy (probs `B×K`, text `B`, tab `B`, baseline `B`) for one batch on the model's device;
        the split is of class `target`'s logit when given (multiclass), else of the decision."""
        output, parts = self.explain(batch, target)
        return scores_to_numpy(output, parts)

    def loss(self, output: FusionOutput, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_op(output.logits.float(), labels)

    def summary_parts(self) -> dict[str, nn.Module | None]:
        """Named sub-networks in the design's order, fusion parts flattened (for `bsmfusion summary`)."""
        parts: dict[str, nn.Module | None] = {
            "tab_subnetwork": self.tab_subnetwork,
            "text_subnetwork": self.text_subnetwork,
        }
        parts.update(self.fusion.parts())
        parts["loss_op"] = self.loss_op
        return parts


def scores_to_numpy(output: FusionOutput, parts: Contributions) -> tuple:
    """`explain`'s output as numpy float32: (softmax probs `B×K`, text `B`, tab `B`, baseline `B`)."""
    probs = torch.softmax(output.logits.float(), dim=-1)
    return tuple(t.float().cpu().numpy() for t in (probs, parts.text, parts.tab, parts.baseline_score))


def build_model(cfg: Config, numeric_dim: int, cardinalities: list[int], *, load_weights: bool = True,
                backbone: nn.Module | None = None) -> MultimodalClassifier:
    """Build the classifier for a config and the fitted tabular shape (numeric width, categorical cardinalities)."""
    fusion_cls = fusion_class(cfg.model.fusion)
    hidden = cfg.model.hidden_dim
    text_encoder = None
    if fusion_cls.uses_text:
        text_encoder = TextEncoder(
            backbone if backbone is not None else build_backbone(cfg.text, load_weights=load_weights),
            hidden,
            pooling=cfg.text.pooling,
            chunk_reduce=cfg.text.chunk_reduce,
            encode=cfg.text.encode,
            dropout=cfg.model.dropout,
            max_chunks=cfg.text.max_chunks,
        )
    tab_encoder = None
    if fusion_cls.uses_tab:
        if numeric_dim + len(cardinalities) == 0:
            raise ConfigError(
                f"model.fusion '{cfg.model.fusion}' needs tabular features; list columns under data.numeric or "
                "data.categorical, or use model.fusion: text_only"
            )
        tab_encoder = build_tab_encoder(cfg.model.tab_encoder, numeric_dim, cardinalities, hidden,
                                        categorical_embedding_dim=cfg.model.categorical_embedding_dim,
                                        dropout=cfg.model.dropout)
    dims = FusionDims(
        text_dim=hidden, tab_dim=hidden, fusion_dim=cfg.model.resolved_fusion_dim,
        num_classes=cfg.model.num_classes, num_heads=cfg.model.num_heads, dropout=cfg.model.dropout,
    )
    return MultimodalClassifier(text_encoder, tab_encoder, build_fusion(cfg.model.fusion, dims))
