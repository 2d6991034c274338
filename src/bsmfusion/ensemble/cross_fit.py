"""The rows an ensemble's combination is fitted on (`model.ensemble.combine_on`).

The member weights, the calibration and the threshold are three choices fitted on held-out member predictions.
On the validation split alone they come from few rows when labels are expensive (60–150 validation rows is
common): the threshold chases the noise of a handful of rows near it and Platt scaling over- or under-shoots.
`cross_fit` (the default) adds every training row that all members scored out of sample, as stacking does:

* the neural members share one seeded holdout (`model.ensemble.member_holdout` of the training rows, drawn with
  `train.seed`); each scores it with the checkpoint it chose there (with `refit_neural`, the holdout run's,
  before the refit);
* the classical members' `member_cv_folds`-fold CV already scores every training row with the fold model that
  did not see it (`TrainResult.out_of_fold`); the holdout rows' entries are taken (all training rows when the
  ensemble has no neural member).

Each member's score on such a row is out of sample, as on a validation row, though the neural member chose its
epoch on the holdout (one choice among a few epochs: a mild optimism) and a classical fold model saw (k−1)/k of
the training rows (slightly weaker than the member scoring new rows). Validation rows come first in the pool.
When some member has no out-of-sample training scores (a member without CV, `member_holdout: 0`) the
combination falls back to the validation rows and meta.json says why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..calibration import softmax
from ..config import Config
from ..decision import FittedDecision, fit_decision
from ..evaluation.metrics import classification_metrics
from ..models.scores import Scores
from .selection import combine, fit_weights, weighted_sum


@dataclass
class CombinationRows:
    """What the combination is fitted on: per member `N×K` logits and the label ids `N`, validation rows first
    (`validation_rows` of them), then `out_of_sample_rows` training rows."""

    logits: list[np.ndarray]
    labels: np.ndarray
    validation_rows: int
    out_of_sample_rows: int = 0
    source: str = "validation rows"
    fallback: str | None = None  # why cross-fitting was asked for but not done
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        """meta.json's `combination_rows`."""
        out = {"rows": self.validation_rows + self.out_of_sample_rows, "validation": self.validation_rows,
               "out_of_sample_training": self.out_of_sample_rows, "source": self.source, **self.extra}
        if self.fallback:
            out["fallback"] = self.fallback
        return out


def shared_holdout(rows: int, share: float, seed: int, codes: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask `rows`: the seeded `share` of the training rows (of their groups, `codes`, when `data.group`
    is set: a held-out row whose twin trained the member would flatter late epochs) held out from the neural
    members' training."""
    rng = np.random.default_rng(seed)
    units = int(codes.max()) + 1 if codes is not None else rows
    held = rng.random(units) < share
    if share > 0 and units and not held.any():  # a tiny table drew none: hold out one (group), never none
        held[rng.integers(units)] = True
    return held[codes] if codes is not None else held


def pool(val_logits: list[np.ndarray], y_val: np.ndarray, out_of_sample: list[np.ndarray | None],
         y_out: np.ndarray | None, names: list[str], source: str) -> CombinationRows:
    """The combination rows: validation logits (per member) stacked over the members' out-of-sample logits of the
    same training rows (`y_out` their labels); the validation rows alone when a member has none (`None`)."""
    missing = [name for name, z in zip(names, out_of_sample) if z is None]
    if y_out is None or missing or not len(y_out):
        why = ("no training row was held out (model.ensemble.member_holdout: 0)" if y_out is None or not len(y_out)
               else f"member(s) {', '.join(missing)} scored no training row out of sample")
        return CombinationRows(val_logits, np.asarray(y_val, np.int64), len(y_val), fallback=why)
    logits = [np.vstack([np.asarray(v, np.float64), np.asarray(o, np.float64)]) for v, o in zip(val_logits, out_of_sample)]
    labels = np.concatenate([np.asarray(y_val, np.int64), np.asarray(y_out, np.int64)])
    return CombinationRows(logits, labels, len(y_val), len(y_out), f"validation rows + {source}")


def logit_scores(logits: np.ndarray) -> Scores:
    """`Scores` whose score is `logits` (`N×K`), for fitting the calibration and the threshold on rows whose
    members' contributions are not all known (out-of-fold rows): binary, the log-odds sit in `text_contribution`;
    multiclass reads only the probabilities. Never stored or shown."""
    logits = np.asarray(logits, np.float64)
    zero = np.zeros(len(logits))
    z = logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits.max(axis=1)
    return Scores(probs=softmax(logits), text_contribution=z, tab_contribution=zero, baseline_score=zero.copy())


@dataclass
class Combination:
    """The fitted combination: member weights `M` and what meta.json records of their selection, the calibration
    and decision (`decided`, fitted on the combination rows) and the metrics of the validation rows under them."""

    weights: np.ndarray
    selection: dict[str, Any]
    decided: FittedDecision
    val_metrics: dict[str, Any]


def fit_combination(cfg: Config, rows: CombinationRows, val_members: list[Scores], y_val: np.ndarray,
                    names: list[str]) -> Combination:
    """Weights by `selection.fit_weights`, then the calibration of the combined score and the threshold
    (`decision.fit_decision`), all on `rows`; the validation metrics from the members' validation `Scores` (whose
    exact contributions the combined validation scores keep). The ensemble's training and
    `benchmarks/small_validation.py` both call this, so a re-combination is what training would give."""
    weights, selection = fit_weights(cfg, rows.logits, rows.labels, names)
    selection["rows"] = rows.source
    _, val_scores = combine(list(zip(weights, val_members)), cfg.model.num_classes)
    pooled = logit_scores(weighted_sum(rows.logits, weights)) if rows.out_of_sample_rows else val_scores
    decided = fit_decision(cfg, rows.labels, pooled)  # calibration of the combined score, then the threshold
    val_metrics = classification_metrics(y_val, decided.calibration.apply(val_scores).probs, decided.threshold)
    return Combination(weights, selection, decided, val_metrics)
