"""`bsmfusion.load(bundle_dir)` → `Predictor`: score DataFrames or stream files, in input order."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd

from ..bundle import Bundle, load_bundle
from ..data.io import count_rows, iter_table, table_format
from ..data.labels import pandas_dtype
from ..decision import Decision, active_decision
from ..evaluation.metrics import predict_labels
from ..precision import Precision
from ..progress import DEFAULT_LOG_EVERY, Progress, muted
from ..models.scores import Scores
from ..scoring.options import ScoringOptions
from ..scoring.scorers import build_scorer
from .columns import CONTRIBUTION_COLUMNS


class FileSummary(NamedTuple):
    """What `Predictor.predict_file` did: rows written, and how many of them have an `error` (no scores)."""

    rows: int
    failed: int


class Predictor:
    """Scores rows with a bundle. Output columns (`inference.columns.OUTPUT_COLUMNS` says each one's unit and sign):
    the id column (or `row`), `prob_<label>` per class (calibrated with the bundle's calibration), `predicted_label`
    (binary: P(positive) ≥ the active decision's threshold; multiclass: argmax; in the training labels' type,
    `label_values`), and the modality contributions `text_contribution`, `tab_contribution` (signed, in log-odds
    toward the positive class for binary tasks), `baseline` (text + tab + baseline = the row's calibrated log-odds
    — for isotonic calibration, the uncalibrated one) and `text_share` = |text| / (|text| + |tab|). The bundle's kind
    picks the scorer (`scoring.scorers.build_scorer`): a torch fusion, a classical member or an ensemble all go
    through the same output code here. `options` (`scoring.ScoringOptions`) say how: engine, precision, chunk
    cache, compile, batch size, and a `decision` (a policy, see `bsmfusion.decision`) or `threshold` (shorthand for
    `{fixed: threshold}`) that replaces the bundle's own decision."""

    def __init__(self, bundle: Bundle, options: ScoringOptions | None = None):
        self.bundle = bundle
        self.options = options or ScoringOptions()
        self.scorer = build_scorer(bundle, self.options)
        self.decision: Decision = active_decision(bundle, self.options.decision, self.options.threshold)

    @property
    def cfg(self):
        return self.bundle.cfg

    @property
    def label_names(self) -> list[str]:
        return self.bundle.label_names

    @property
    def label_values(self) -> list:
        """The classes as the training label column held them (0 and 1 stay integers), in the order of
        `label_names` and of `predict_proba`'s columns; binary: the second is the positive class."""
        return self.bundle.label_values

    @property
    def threshold(self) -> float | None:
        """The active decision's threshold on the calibrated P(positive); None for multiclass (argmax)."""
        return self.decision.threshold

    @property
    def calibration(self):
        """The bundle's `calibration.Calibration`, applied to every score."""
        return self.scorer.calibration

    @property
    def precision(self) -> Precision:
        return self.scorer.precision

    def describe_precision(self) -> str:
        """What computes the scores and why, e.g. `auto → bf16: AMX`, `fp64 (NumPy ...)` for a classical member;
        with the precision the threshold was chosen under when that differs."""
        return self.scorer.describe_precision()

    @property
    def chunk_cache(self):
        """The `scoring.chunk_cache.ChunkVectorCache` (an ensemble: the `CacheGroup` of its neural members' caches;
        `stats()` counts hits and encoded chunks), or None."""
        return self.scorer.chunk_cache

    def chunk_cache_info(self) -> dict:
        """`enabled`, a one-line `description` and the cache's counters when enabled (served by `/v1/model`)."""
        return self.scorer.chunk_cache_info()

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
        # float64: the probabilities the decision compared with the threshold, to the last digit (float32 rounding
        # near a saturated threshold would disagree with predicted_label when the threshold is re-applied)
        probs = np.full((len(frame), len(self.label_names)), np.nan, dtype=np.float64)
        contributions = np.full((len(CONTRIBUTION_COLUMNS), len(frame)), np.nan, dtype=np.float32)
        predicted: list = [None] * len(frame)
        if len(good):
            scores = self.score_frame(frame.iloc[good].reset_index(drop=True) if len(problems) else frame)
            probs[good] = scores.probs
            contributions[:, good] = np.stack([scores.text_contribution, scores.tab_contribution,
                                               scores.baseline_score, scores.text_share])
            values = self.label_values
            for row, label in zip(good, predict_labels(scores.probs, self.threshold)):
                predicted[row] = values[label]
        for k, name in enumerate(self.label_names):
            out[f"prob_{name}"] = probs[:, k]
        dtype = pandas_dtype(self.bundle.preprocessor.label_type)
        out["predicted_label"] = predicted if dtype is None else pd.array(predicted, dtype=dtype)
        for k, name in enumerate(CONTRIBUTION_COLUMNS):
            out[name] = contributions[k]
        out["error"] = [problems.get(i, "") for i in range(len(frame))]
        return out

    def predict_file(self, source: str | Path, destination: str | Path, *, batch_rows: int = 2048,
                     progress: bool = True, log_every: float = DEFAULT_LOG_EVERY, explain=None) -> FileSummary:
        """Stream `source` in frames of `batch_rows` rows into `destination` (CSV or JSONL appended frame by frame;
        Parquet written per row group). Memory stays bounded by `batch_rows`. Returns the rows written and how
        many of them could not be scored (their `error` column says why).

        `explain` (an `explain.attribution.ExplainOptions`) adds `top_messages` and `top_features` before `error`.

        `progress` shows rows done of the file's total, rows/s and the ETA on stderr, moved by every scoring batch
        (`bsmfusion.progress`): a live bar on a terminal, else one plain line every `log_every` seconds."""
        fmt = table_format(destination)
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)  # as train and evaluate create theirs
        tmp = destination.with_name(f".{destination.name}.partial")
        written = failed = 0
        writer = None
        tracker = Progress("predict", count_rows(source) if progress else None, log_every=log_every, enabled=progress)
        try:
            with tracker:
                for frame in iter_table(source, batch_rows):
                    result = self.predict_frame(frame, row_offset=written)
                    if explain is not None:
                        from ..explain.record import with_top_columns

                        # the frame's predict_frame output is `result`: explain from it, not scoring it again
                        result = with_top_columns(result, self._explained(frame, result, explain), explain.top)
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
                    failed += int((result["error"] != "").sum())
                    tracker.tail = f"{failed:,} row{'' if failed == 1 else 's'} with errors" if failed else ""
                    tracker.update(written)  # its scoring batches moved it already; unscorable rows count too
            if writer is not None:
                writer.close()
            tmp.replace(destination)
        finally:
            if tmp.exists():
                tmp.unlink()
        return FileSummary(written, failed)

    def predict_records(self, records: Iterable[dict]) -> pd.DataFrame:
        return self.predict_frame(pd.DataFrame(list(records)))

    # ------------------------------------------------------------ the sklearn-style API
    @property
    def path(self) -> Path:
        """The bundle folder this predictor was loaded from."""
        return Path(self.bundle.path)

    def _scored(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`predict_frame`, refusing rows it could not score (the sklearn-style methods return no gaps)."""
        result = self.predict_frame(frame)
        failed = np.flatnonzero(result["error"].to_numpy() != "")
        if len(failed):
            from ..errors import DataError

            raise DataError(f"row {int(failed[0])}: {result['error'].iloc[failed[0]]} ({len(failed)} row(s) cannot be "
                            "scored); fix the cell, or use predict_frame, which keeps such rows with the reason in 'error'")
        return result

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted labels, one per row, in input order.

        Args:
            frame: rows with the config's text, numeric and categorical columns (a label column is ignored).

        Returns:
            A numpy array of labels in the training label column's type (`label_values`: integer labels give an
            integer array), at the active decision's threshold for binary tasks (the bundle's own, or the one
            `load(..., decision=...)` asked for).
        """
        predicted = self._scored(frame)["predicted_label"]
        if pandas_dtype(self.bundle.preprocessor.label_type) is None:
            return predicted.to_numpy()
        return predicted.to_numpy(dtype=predicted.dtype.numpy_dtype)  # no gaps here: Int64 → int64

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, one row per input row.

        Args:
            frame: rows with the config's text, numeric and categorical columns.

        Returns:
            An `N×K` float numpy array; column k is the probability of `label_names[k]`.
        """
        result = self._scored(frame)
        return result[[f"prob_{name}" for name in self.label_names]].to_numpy(dtype=np.float64)

    def explain(self, frame: pd.DataFrame, level: str = "modalities", options=None):
        """How much the dialogue and the tabular facts moved each decision (see the class docstring), and which
        messages and which facts (docs/explain.md).

        Args:
            frame: rows with the config's text, numeric and categorical columns.
            level: "modalities" (the default), "messages", "features" or "rows".
            options: an `explain.attribution.ExplainOptions` (method: auto, shapley or occlusion; exact up to how
                many players, permutations, seed).

        Returns:
            "modalities": a DataFrame with `frame`'s index and the columns `text_contribution`, `tab_contribution`,
            `baseline` (text + tab + baseline = the row's log-odds) and `text_share`. "messages": one row per
            message (`row`, `index`, `role`, `text`, `contribution`, `stderr`), a row's adding up to its
            text_contribution; "features": one row per tabular column (`row`, `column`, `value`, `contribution`,
            `stderr`), adding up to tab_contribution; "rows": both levels, one dict per row (`explain_records`).
        """
        if level == "modalities":
            result = self._scored(frame)[list(CONTRIBUTION_COLUMNS)]
            result.index = frame.index
            return result
        if level not in ("messages", "features", "rows"):
            from ..errors import OptionError

            raise OptionError(f"level must be modalities, messages, features or rows, got {level!r}")
        scored = self._scored(frame)  # refuses rows it cannot score, as every sklearn-style method does
        records = self._explained(frame, scored, options)
        if level == "rows":
            return records
        items = [{"row": label, **item} for label, record in zip(frame.index, records) for item in record[level]]
        return pd.DataFrame(items, columns=["row", "index", "column", "role", "text", "contribution", "stderr"]
                            if level == "messages" else ["row", "column", "value", "contribution", "stderr"])

    def explain_records(self, frame: pd.DataFrame, options=None, *, row_offset: int = 0) -> list[dict]:
        """One dict per row (`explain.record.row_record`): the `predict_frame` columns as id, score (the calibrated
        probability of the positive class; multiclass of the predicted one), decision, and both levels of
        attribution. A row that cannot be scored gets its id and `error` only."""
        return self._explained(frame, self.predict_frame(frame, row_offset=row_offset), options)

    def _explained(self, frame: pd.DataFrame, scored: pd.DataFrame, options) -> list[dict]:
        """`explain_records` of `frame` whose `predict_frame` output is `scored` (not scored a second time)."""
        from ..explain.attribution import explain_with
        from ..explain.record import row_record

        good = np.flatnonzero(scored["error"].to_numpy() == "")
        probs = scored[[f"prob_{name}" for name in self.label_names]].to_numpy(dtype=np.float64)
        id_column = scored.columns[0]
        with muted():  # the copies scored for the games are not rows of the input: progress moves once, above
            attributions = explain_with(self.scorer, self.cfg, self.bundle.preprocessor.tabular, frame.iloc[good],
                                        options) if len(good) else []
        records: list[dict] = [{id_column: scored[id_column].iloc[i], "error": scored["error"].iloc[i]}
                               for i in range(len(frame))]
        positive = len(self.label_names) == 2
        for i, attribution in zip(good, attributions):
            klass = 1 if positive else int(probs[i].argmax())
            head = {id_column: scored[id_column].iloc[i], "score": probs[i, klass],
                    "score_class": self.label_names[klass], "decision": scored["predicted_label"].iloc[i]}
            records[i] = row_record(attribution, head, scored["baseline"].iloc[i])
        return records

    def evaluate(self, frame: pd.DataFrame | str | Path, out: str | Path | None = None) -> dict:
        """Metrics on a labelled table, at the active decision's threshold (`decision`: the bundle's own, or the
        one `load(..., decision=...)` asked for).

        Args:
            frame: a labelled DataFrame or table file (it needs the config's `data.label` column).
            out: also write metrics.json, PNG plots and report.md into this folder (as `bsmfusion evaluate`).

        Returns:
            The metrics: binary tasks roc_auc, pr_auc, f1, accuracy, precision, recall, log_loss, ece, n,
            positives, threshold; multiclass tasks their macro/micro forms. An undefined metric (ROC-AUC on one
            class) is None. Also `calibration` (ECE and log loss before/after) and, binary, `operating_point`
            (the active decision with bootstrap 95% intervals) and `alternatives` (see
            `evaluation.operating_point`).
        """
        from ..evaluation.report import evaluate, evaluation_metrics

        if out is not None:
            return evaluate(self, frame, out)
        return evaluation_metrics(self, frame)[0]

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Copy the bundle folder (every file, checksums included) to `folder`.

        Args:
            folder: where to put the copy; it must not exist or be empty unless `overwrite`.
            overwrite: replace an existing non-empty folder.

        Returns:
            The path of the copy, loadable with `bsmfusion.load`.

        Raises:
            ConfigError: this predictor's decision is an override (`load(..., decision=...)` or `threshold`), which
                the copy would silently lose: its meta.json holds the bundle's own decision.
        """
        import shutil

        from ..bundle import normalize_modes
        from ..errors import ConfigError
        from ..folders import check_out_folder

        if self.decision.source == "override":
            raise ConfigError(f"save copies the bundle as trained, with its own decision, not this predictor's "
                              f"override ({self.decision.describe()}); load the copy with the same decision=, or "
                              "retrain with train.decision set to it")
        folder = Path(folder)
        if folder.resolve() == self.path.resolve():
            return folder
        check_out_folder(folder, overwrite)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(self.path, folder)
        normalize_modes(folder)
        return folder


def verify_key_of(options: ScoringOptions):
    """The Ed25519 public key scoring must check the bundle's signature with: `options.verify_key`, else the one in
    `BSMFUSION_VERIFY_KEY`, else None (an `OptionError` naming the option or variable when it is no key)."""
    from ..bundle import public_key

    return public_key(options.verify_key, env=True)


def load(bundle_dir: str | Path, options: ScoringOptions | None = None, **settings) -> Predictor:
    """Load a bundle folder into a `Predictor`; `settings` replace single fields of `options`
    (`ScoringOptions.of`). The folder must match its closed manifest; with a verify key (`verify_key_of`) the
    bundle's signature is required too, without one that it was not checked is said once per bundle."""
    from ..manifest import note_unchecked

    options = ScoringOptions.of(options, **settings)
    key = verify_key_of(options)
    bundle = load_bundle(bundle_dir, verify_key=key)
    if key is None:
        note_unchecked(bundle_dir)
    return Predictor(bundle, options)
