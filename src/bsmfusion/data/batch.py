"""`Batch`: what the collator (`data.dataset.Collator`) gives a model, typed. Re-exported next to `FusionOutput`
(`bsmfusion.models.fusion`), what the model gives back."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

import torch


class TextForm(str, Enum):
    """The form a batch's dialogue comes in, which decides how the classifier encodes it."""

    TOKENS = "tokens"  # input_ids, attention_mask (B×C×T), chunk_mask (B×C): the full encoder runs
    CHUNK_VECTORS = "chunk_vectors"  # chunk_vectors (B×C×D), chunk_mask: encoded chunks (frozen encoder, chunk cache)
    THREAD_VECTORS = "thread_vectors"  # thread_vectors (B×D): chunks encoded and reduced (frozen encoder)
    # tokens plus frozen_hidden (N_real×T×D): the frozen lower layers' output, the layers above them run
    FROZEN_LAYERS = "frozen_layers"
    NONE = "none"  # no text (tab_only)


@dataclass
class Batch:
    """B rows, padded to the batch's longest thread (`C_b` chunks of `T_b` tokens) unless the collator pads to
    the full `C×T`.

    Always present: `numeric` (B×Dn float32), `categorical` (B×Dc int64); from the collator also `index` (B, the
    rows' positions in their table), and `labels` (B int64) when the table has labels. The text comes in one of
    the `TextForm`s; when a batch holds more than one (the chunk cache adds chunk vectors to a token batch),
    `text_form` says which the model reads: thread vectors, else chunk vectors, else the frozen layers' output,
    else tokens.
    """

    numeric: torch.Tensor
    categorical: torch.Tensor
    index: torch.Tensor | None = None  # None in batches built outside a table (the ONNX export's tracing)
    labels: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None  # B×C×T int64
    attention_mask: torch.Tensor | None = None  # B×C×T int64, 1 for real tokens
    chunk_mask: torch.Tensor | None = None  # B×C bool, True for real chunks (tokens or chunk vectors)
    text_empty: torch.Tensor | None = None  # B bool, True where the thread had no text (tokens only)
    chunk_vectors: torch.Tensor | None = None  # B×C×D float32
    thread_vectors: torch.Tensor | None = None  # B×D float32
    # N_real×T×D float32: for each real chunk (chunk_mask order), the output of the encoder's frozen lower layers
    # at its tokens (zero past its length); training with train.freeze_layers
    frozen_hidden: torch.Tensor | None = None

    @property
    def text_form(self) -> TextForm:
        if self.thread_vectors is not None:
            return TextForm.THREAD_VECTORS
        if self.chunk_vectors is not None:
            return TextForm.CHUNK_VECTORS
        if self.frozen_hidden is not None:
            return TextForm.FROZEN_LAYERS
        if self.input_ids is not None:
            return TextForm.TOKENS
        return TextForm.NONE

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor on `device` (Lightning moves batches with this, too)."""
        return dataclasses.replace(self, **{
            f.name: value.to(device, non_blocking=non_blocking)
            for f in dataclasses.fields(self) if (value := getattr(self, f.name)) is not None})

    def replace(self, **changes) -> "Batch":
        """A copy with `changes` (field name → tensor) applied."""
        return dataclasses.replace(self, **changes)
