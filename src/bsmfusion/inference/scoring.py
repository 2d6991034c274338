"""Scoring an encoded table with a model; kept for compatibility: `Scores`, `score_table` and
`torch_batch_scores` live in `models.scores`, below training and calibration."""
from ..models.scores import Scores, score_table, torch_batch_scores  # noqa: F401

__all__ = ["Scores", "score_table", "torch_batch_scores"]
