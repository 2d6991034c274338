"""Scoring an encoded table with a model; kept for compatibility: `Scores` and `score_table` live in
`models.scores`, below training and calibration."""
from ..models.scores import Scores, score_table  # noqa: F401

__all__ = ["Scores", "score_table"]
