"""How much the dialogue and the tabular facts each moved one decision: an exact two-player Shapley split.

The fusion head f(t, u) is evaluated with each embedding at its own value or at the baseline (t̄, ū: the
training means, stored in the bundle). With s = the positive class's log-odds (binary) or the predicted class's
logit (multiclass):

    text = ½[(s(t,u) − s(t̄,u)) + (s(t,ū) − s(t̄,ū))]      tab = ½[(s(t,u) − s(t,ū)) + (s(t̄,u) − s(t̄,ū))]

so text + tab + s(t̄,ū) = s(t,u) exactly, whatever the fusion. A modality the head ignores gets 0; one a head
reads only through the other side (cross-attention, a gate) gets its fair half of the interaction.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .fusion import Fusion, FusionOutput


@dataclass
class Contributions:
    """Per-row split, all `B`, in score units (log-odds for binary tasks, the predicted logit for multiclass)."""

    text: torch.Tensor
    tab: torch.Tensor
    baseline_score: torch.Tensor
    score: torch.Tensor

    @property
    def text_share(self) -> torch.Tensor:
        """|text| / (|text| + |tab|) ∈ [0, 1]; 0.5 where both are zero."""
        text, tab = self.text.abs(), self.tab.abs()
        total = text + tab
        return torch.where(total > 0, text / total.clamp_min(1e-30), torch.full_like(total, 0.5))


def decision_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`B×K` logits → `B` scores: log-odds of class 1 when K = 2, else the logit of class `target`."""
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits.gather(1, target.unsqueeze(1)).squeeze(1)


def _four_ways(value: torch.Tensor | None, baseline: torch.Tensor, order: tuple[bool, ...]) -> torch.Tensor | None:
    """Stack the batch four times, each copy either the real rows (True) or the baseline (False)."""
    if value is None:
        return None
    base = baseline.to(value.dtype).expand_as(value)
    return torch.cat([value if real else base for real in order], dim=0)


def shapley_split(fusion: Fusion, text: torch.Tensor | None, tab: torch.Tensor | None,
                  text_baseline: torch.Tensor, tab_baseline: torch.Tensor,
                  target: torch.Tensor | None = None) -> tuple[FusionOutput, Contributions]:
    """Run the head once on `4B` rows — (t,u), (t̄,u), (t,ū), (t̄,ū) — and split the decision.

    `target` (`B` class ids, multiclass only) splits that class's logit instead of the predicted one's (an
    ensemble splits every member at the ensemble's predicted class). Returns the output for the real rows (logits
    `B×K`, details sliced to `B`) and their `Contributions`.
    """
    batch = (text if text is not None else tab).shape[0]
    out = fusion(_four_ways(text, text_baseline, (True, False, True, False)),
                 _four_ways(tab, tab_baseline, (True, True, False, False)))
    logits = out.logits.float().reshape(4, batch, -1)
    target = logits[0].argmax(dim=1) if target is None else target.to(logits.device)
    real, text_base, tab_base, both_base = (decision_score(part, target) for part in logits)
    contributions = Contributions(
        text=0.5 * ((real - text_base) + (tab_base - both_base)),
        tab=0.5 * ((real - tab_base) + (text_base - both_base)),
        baseline_score=both_base,
        score=real,
    )
    details = {k: v[:batch] if v.ndim and v.shape[0] == 4 * batch else v for k, v in out.details.items()}
    return FusionOutput(logits=out.logits[:batch], details=details), contributions
