"""`bsmfusion.load(bundle_dir)` → `Predictor`: score DataFrames or stream files, in input order."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from ..bundle import Bundle, load_bundle
from ..data.io import iter_table, table_format
from ..evaluation.metrics import predict_labels
from ..precision import Precision
from .scorers import build_scorer
from .scoring import Scores


CONTRIBUTION_COLUMNS = ("text_contribution", "tab_contribution", "text_share")


class Predictor:
    """Scores rows with a bundle. Output columns: the id column (or `row`), `prob_<label>` per class,
    `predicted_label`, and the modality contributions `text_contribution`, `tab_contribution` (signed, in
    log-odds for binary tasks; they add up with the model's baseline score to the row's score) and `text_share`
    = |text| / (|text| + |tab|). The bundle's kind picks the scorer (`inference.scorers.build_scorer`): a torch
    fusion, a classical member or an ensemble all go through the same output code here."""

    def __init__(self, bundle: Bundle, *, batch_size: int = 64, device: str = "cpu", precision: str | None = None,
                 engine: str = "torch", quantized: bool = False):
        self.bundle = bundle
        self.scorer = build_scorer(bundle, batch_size=batch_size, device=device, precision=precision, engine=engine,
                                   quantized=quantized)

    @property
    def cfg(self):
        return self.bundle.cfg

    @property
    def label_names(self) -> list[str]:
        return self.bundle.label_names

    @property
    def threshold(self) -> float | None:
        return self.bundle.threshold

    @property
    def precision(self) -> Precision:
        return self.scorer.precision

    def describe_precision(self) -> str:
        """What computes the scores and why, e.g. `auto → bf16: AMX`, `fp64 (NumPy ...)` for a classical member;
        with the precision the threshold was chosen under when that differs."""
        return self.scorer.describe_precision()

    def score_frame(self, frame: pd.DataFrame) -> Scores:
        return self.scorer.score_frame(frame)

    def predict_frame(self, frame: pd.DataFrame, *, row_offset: int = 0) -> pd.DataFrame:
        """One output row per input row, same order. A row that cannot be scored (a numeric cell that is not a
        number) keeps its place with empty probabilities and the reason in `error`."""
        from ..data.tabular import numeric_problems, require_columns

        text_columns = self.scorer.text_columns
        require_columns(frame, [*text_columns, *self.cfg.data.numeric, *self.cfg.data.categorical], "input data")
        problems = numeric_problems(frame, self.cfg.data.numeric)
        good = np.array([i for i in range(len(frame)) if i not in problems], dtype=np.int64)
        id_column = self.cfg.data.id
        out = pd.DataFrame()
        if id_column is not None and id_column in frame.columns:
            out[id_column] = frame[id_column].to_numpy()
        else:
            out["row"] = np.arange(row_offset, row_offset + len(frame))
        probs = np.full((len(frame), len(self.label_names)), np.nan, dtype=np.float32)
        contributions = np.full((3, len(frame)), np.nan, dtype=np.float32)
        predicted: list = [None] * len(frame)
        if len(good):
            scores = self.score_frame(frame.iloc[good].reset_index(drop=True) if len(problems) else frame)
            probs[good] = scores.probs
            contributions[:, good] = np.stack([scores.text_contribution, scores.tab_contribution, scores.text_share])
            for row, label in zip(good, predict_labels(scores.probs, self.threshold)):
                predicted[row] = self.label_names[label]
        for k, name in enumerate(self.label_names):
            out[f"prob_{name}"] = probs[:, k]
        out["predicted_label"] = predicted
        for k, name in enumerate(CONTRIBUTION_COLUMNS):
            out[name] = contributions[k]
        out["error"] = [problems.get(i, "") for i in range(len(frame))]
        return out

    def predict_file(self, source: str | Path, destination: str | Path, *, batch_rows: int = 2048,
                     progress: bool = True) -> int:
        """Stream `source` in frames of `batch_rows` rows into `destination` (CSV or JSONL appended frame by frame;
        Parquet written per row group). Memory stays bounded by `batch_rows`. Returns the row count."""
        fmt = table_format(destination)
        destination = Path(destination)
        tmp = destination.with_name(f".{destination.name}.partial")
        written = 0
        started = time.perf_counter()
        writer = None
        try:
            for frame in iter_table(source, batch_rows):
                result = self.predict_frame(frame, row_offset=written)
                if fmt == "csv":
                    result.to_csv(tmp, mode="a" if written else "w", header=not written, index=False)
                elif fmt == "jsonl":
                    result.to_json(tmp, orient="records", lines=True, mode="a" if written else "w")
                else:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    table = pa.Table.from_pandas(result, preserve_index=False)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                written += len(frame)
                if progress:
                    rate = written / max(time.perf_counter() - started, 1e-9)
                    print(f"\rscored {written:,} rows ({rate:,.1f} rows/s)", end="", file=sys.stderr, flush=True)
            if writer is not None:
                writer.close()
            tmp.replace(destination)
        finally:
            if tmp.exists():
                tmp.unlink()
        if progress:
            print(file=sys.stderr)
        return written

    def predict_records(self, records: Iterable[dict]) -> pd.DataFrame:
        return self.predict_frame(pd.DataFrame(list(records)))


def load(bundle_dir: str | Path, **kwargs) -> Predictor:
    """Load a bundle folder into a `Predictor` (checks the SHA-256 manifest)."""
    return Predictor(load_bundle(bundle_dir), **kwargs)
