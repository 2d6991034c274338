"""`--compile`: score with the BERT backbone compiled by TorchInductor.

Eager PyTorch spends most of a bf16 forward outside the matrix multiplies on an AMX CPU (attention, GELU,
LayerNorm, residual adds and dtype casts: about 70% of the time, docs/performance.md); Inductor fuses those
element-wise steps and, with `freezing`, folds the weights into the graph as constants. Measurements per machine:
docs/performance.md.

The price is compile time when the scorer starts (about 30 s for MiniLM on 2 cores, plus a second graph for
single-chunk batches), so it pays for batch scoring and long-running servers, not for a few rows. Shapes are
dynamic (any number of chunks, any chunk length): the warm-up here compiles the two graphs Dynamo keeps (several
chunks, one chunk), so no request waits for a compile later. It needs a C++ compiler on CPU (Triton on CUDA);
where compiling fails, scoring stays eager and the description says why.
"""
from __future__ import annotations

import torch
from torch import nn

from ..precision import Precision


def compile_backbone(model: nn.Module, precision: Precision, device: torch.device) -> str:
    """Replace `model.text_subnetwork.backbone` by its compiled form (for scoring only: the weights are frozen
    into the graph) and compile it now; returns a one-line description (`on: ...` or `off: why`)."""
    text = getattr(model, "text_subnetwork", None)
    if text is None:
        return "off: the model reads no text (tab_only)"
    import torch._inductor.config as inductor_config

    eager = text.backbone
    inductor_config.freezing = True  # weights become constants of the graph; applies to no-grad graphs only
    compiled = torch.compile(eager, dynamic=True)
    try:
        for chunks in (2, 1):  # several chunks, then one: Dynamo specialises a size of 1 into its own graph
            ids = torch.full((chunks, 3), 1000, dtype=torch.long, device=device)
            with torch.inference_mode(), precision.autocast(device):
                compiled(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception as err:  # no C++ compiler, an unsupported op, ...: eager still scores correctly
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return f"off: torch.compile failed ({reason}); scoring runs eager"
    text.backbone = compiled
    return "on: TorchInductor backbone (dynamic shapes, frozen weights)"
