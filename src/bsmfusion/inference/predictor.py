"""`bsmfusion.load(bundle_dir)` → `Predictor`: score DataFrames or stream files, in input order."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from ..bundle import Bundle, load_bundle
from ..data.dataset import Collator
from ..data.io import iter_table, table_format
from ..evaluation.metrics import predict_labels
from .scoring import Scores, score_table


class Predictor:
    """Scores rows with a bundle. Output columns: the id column (or `row`), `prob_<label>` per class,
    `predicted_label`, and the modality contributions `text_weight`, `tab_weight`."""

    def __init__(self, bundle: Bundle, *, batch_size: int = 64, device: str = "cpu", precision: str = "auto",
                 engine: str = "torch", quantized: bool = False):
        self.bundle = bundle
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.precision = precision
        self.engine = engine
        if engine == "onnx":
            from ..errors import BundleError
            from .onnx_export import OnnxModel, onnx_file

            path = onnx_file(bundle.path, "int8" if quantized else None)
            if not path.is_file():
                flag = " --quantize int8" if quantized else ""
                raise BundleError(f"bundle '{bundle.path}' has no {path.name}; run 'bsmfusion export --model {bundle.path} --format onnx{flag}' first")
            self.model = OnnxModel(path, threads=torch.get_num_threads())
        elif engine == "torch":
            self.model = bundle.model.to(self.device).eval()
        else:
            raise ValueError(f"unknown engine '{engine}'; use 'torch' or 'onnx'")
        cfg = bundle.cfg
        self.collator = Collator(bundle.preprocessor.text.pad_token_id, cfg.text.max_chunks, cfg.text.chunk_tokens)

    @property
    def cfg(self):
        return self.bundle.cfg

    @property
    def label_names(self) -> list[str]:
        return self.bundle.label_names

    @property
    def threshold(self) -> float | None:
        return self.bundle.threshold

    def score_frame(self, frame: pd.DataFrame) -> Scores:
        table = self.bundle.preprocessor.encode(frame, with_labels=False)
        return score_table(self.model, table, self.collator, batch_size=self.batch_size, device=self.device,
                           precision=self.precision)

    def predict_frame(self, frame: pd.DataFrame, *, row_offset: int = 0) -> pd.DataFrame:
        """One output row per input row, same order. A row that cannot be scored (a numeric cell that is not a
        number) keeps its place with empty probabilities and the reason in `error`."""
        from ..data.tabular import numeric_problems, require_columns

        require_columns(frame, [*self.cfg.data.text, *self.cfg.data.numeric, *self.cfg.data.categorical], "input data")
        problems = numeric_problems(frame, self.cfg.data.numeric)
        good = np.array([i for i in range(len(frame)) if i not in problems], dtype=np.int64)
        id_column = self.cfg.data.id
        out = pd.DataFrame()
        if id_column is not None and id_column in frame.columns:
            out[id_column] = frame[id_column].to_numpy()
        else:
            out["row"] = np.arange(row_offset, row_offset + len(frame))
        probs = np.full((len(frame), len(self.label_names)), np.nan, dtype=np.float32)
        text_weight = np.full(len(frame), np.nan, dtype=np.float32)
        predicted: list = [None] * len(frame)
        if len(good):
            scores = self.score_frame(frame.iloc[good].reset_index(drop=True) if len(problems) else frame)
            probs[good] = scores.probs
            text_weight[good] = scores.text_weight
            for row, label in zip(good, predict_labels(scores.probs, self.threshold)):
                predicted[row] = self.label_names[label]
        for k, name in enumerate(self.label_names):
            out[f"prob_{name}"] = probs[:, k]
        out["predicted_label"] = predicted
        out["text_weight"] = text_weight
        out["tab_weight"] = 1.0 - text_weight
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
