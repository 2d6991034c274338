"""A loaded ensemble bundle and its scorer.

The bundle holds the usual top-level files (config, preprocessing, meta with the weights and each member's
validation metrics, metrics, manifest) and each member as a complete bundle under `members/<name>/`, its files
listed in the top manifest too. Members of weight 0 are not loaded. Scoring builds one scorer per member with the
same `scoring.ScoringOptions` — so every neural member gets the engine (torch, ONNX, int8), `compile` and its own
chunk cache — and combines their scores (`selection.combine`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..bundle import load_bundle
from ..classical.member import table_preprocessor
from ..config import Config
from ..errors import BundleError
from ..models.scores import Scores
from ..precision import Precision
from ..progress import advance as report_progress
from ..progress import muted
from ..scoring.chunk_cache import CacheGroup
from ..scoring.options import ScoringOptions
from ..scoring.scorers import member_scorer
from .selection import combine

MEMBERS_DIR = "members"


class EnsembleScorer:
    """Scores a frame with every member of positive weight and combines them (`selection.combine`). The members
    share one `memo` per frame, so the neural members tokenise the dialogue once; each neural member keeps its own
    chunk cache (`chunk_cache` is their `CacheGroup`)."""

    def __init__(self, cfg: Config, members: list[tuple[str, float, Any]]):
        self.cfg = cfg
        self.members = members  # (name, weight, scorer)
        used = sorted({scorer.precision.used for _, _, scorer in members})
        self.precision = Precision("ensemble", "+".join(used), self.describe_precision())
        caches = {name: scorer.chunk_cache for name, _, scorer in members if scorer.chunk_cache is not None}
        self.chunk_cache = CacheGroup(caches) if caches else None

    @property
    def text_columns(self) -> list[str]:
        return list(self.cfg.data.text) if any(s.text_columns for _, _, s in self.members) else []

    def describe_precision(self) -> str:
        return "; ".join(f"{name} ×{weight:.2f}: {scorer.describe_precision()}" for name, weight, scorer in self.members)

    def chunk_cache_info(self) -> dict:
        """Summed counters of the members' caches, and each neural member's own info under `members`."""
        infos = {name: scorer.chunk_cache_info() for name, _, scorer in self.members if name in self.neural_names()}
        if self.chunk_cache is None:  # every neural member's cache is off: say why, once per distinct reason
            reasons = sorted({info["description"] for info in infos.values()}) or ["off: no neural member"]
            return {"enabled": False, "description": "; ".join(reasons), "members": infos}
        sizes = ", ".join(f"{name}: {info['description']}" for name, info in infos.items())
        stats = self.chunk_cache.stats()
        stats.pop("members")
        return {"enabled": True, "description": f"one cache per neural member ({sizes})", **stats, "members": infos}

    def neural_names(self) -> list[str]:
        """The members scored by a `NeuralScorer` (torch or ONNX)."""
        return [name for name, _, scorer in self.members if hasattr(scorer.uncalibrated, "engine")]

    def score_frame(self, frame: pd.DataFrame, targets: np.ndarray | None = None, memo: dict | None = None) -> Scores:
        k = self.cfg.model.num_classes
        memo = {} if memo is None else memo
        with muted():  # every member scores the same rows: the running progress moves once, below
            scores = self._score_members(frame, targets, memo, k)
        report_progress(len(frame))
        return scores

    def _score_members(self, frame: pd.DataFrame, targets: np.ndarray | None, memo: dict, k: int) -> Scores:
        parts = [(w, scorer.score_frame(frame, memo=memo)) for _, w, scorer in self.members]
        logits, combined = combine(parts, k)
        if k == 2 or len(frame) == 0:
            return combined
        target = logits.argmax(axis=1) if targets is None else np.asarray(targets, dtype=np.int64)
        resplit = [(w, self._split_at(scorer, frame, s, target)) for (_, w, scorer), (_, s) in zip(self.members, parts)]
        _, split = combine(resplit, k)
        return Scores(combined.probs, split.text_contribution, split.tab_contribution, split.baseline_score)

    @staticmethod
    def _split_at(scorer, frame: pd.DataFrame, scores: Scores, target: np.ndarray) -> Scores:
        """The member's split of class `target`'s logit: rows it split at another class are scored again."""
        rows = np.flatnonzero(np.asarray(scores.probs).argmax(axis=1) != target)
        if not len(rows):
            return scores
        again = scorer.score_frame(frame.iloc[rows].reset_index(drop=True), targets=target[rows])
        fields = {name: np.array(getattr(scores, name), dtype=np.float64, copy=True)
                  for name in ("text_contribution", "tab_contribution", "baseline_score")}
        for name, values in fields.items():
            values[rows] = getattr(again, name)
        return Scores(probs=scores.probs, **fields)


@dataclass
class EnsembleMember:
    name: str  # neural | neural_2 ... | tfidf_lr | gbdt | a registered classical kind
    weight: float
    bundle: Any  # bundle.Bundle; None when the weight is 0 (not loaded)


class EnsembleModel:
    """A loaded ensemble bundle: its members (those of weight 0 are not loaded)."""

    kind = "ensemble"

    def __init__(self, cfg: Config, members: list[EnsembleMember], path: Path | None = None):
        self.cfg = cfg
        self.members = members
        self.path = path

    def neural_members(self) -> list[EnsembleMember]:
        """The loaded members that are torch fusions (what `export` writes graphs for)."""
        return [m for m in self.members if m.bundle is not None and m.bundle.kind == "neural"]

    def scorer(self, options: ScoringOptions | None = None) -> EnsembleScorer:
        """One scorer per member of positive weight, each built with `options` (`scoring.ScoringOptions`); the
        chunk cache's size is split evenly among the neural members."""
        options = options or ScoringOptions()
        neural = self.neural_members()
        if neural and options.chunk_cache_mb:
            options = replace(options, chunk_cache_mb=options.chunk_cache_mb / len(neural))
        scorers = []
        for m in self.members:
            if m.weight <= 0:
                continue
            try:
                scorers.append((m.name, m.weight, member_scorer(m.bundle, options)))
            except BundleError as err:  # a member's missing graph: export the ensemble, not the member folder
                if "bsmfusion export" not in str(err):
                    raise
                flag = " --quantize int8" if options.quantized else ""
                raise BundleError(f"bundle '{self.path}': neural member '{m.name}' has no ONNX graph; run 'bsmfusion "
                                  f"export --model {self.path} --format onnx{flag}' first") from None
        return EnsembleScorer(self.cfg, scorers)


def load_ensemble(path: Path, cfg: Config, meta: dict[str, Any]):
    """(preprocessor, EnsembleModel) of an ensemble bundle whose manifest was checked (the registry's loader for
    the ensemble kind). Member folders are complete bundles; the top manifest already covers every member file."""
    preprocessor = table_preprocessor(cfg, state=(path / "preprocessing.json").read_text(encoding="utf-8"))
    members = [EnsembleMember(m["name"], float(m["weight"]),
                              load_bundle(path / MEMBERS_DIR / m["name"], verify=False) if m["weight"] > 0 else None)
               for m in meta["members"]]
    return preprocessor, EnsembleModel(cfg, members, path)
