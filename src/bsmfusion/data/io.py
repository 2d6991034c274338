"""Read and write tables by extension: CSV, Parquet (.parquet, .parquet.brotli, .pq) or JSON Lines."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pandas as pd

from ..errors import DataError

_CSV = (".csv", ".csv.gz", ".tsv")
_PARQUET = (".parquet", ".pq", ".parquet.brotli", ".parquet.snappy")
_JSONL = (".jsonl", ".jsonl.gz", ".ndjson")


def table_format(path: str | Path) -> str:
    name = str(path).lower()
    for fmt, suffixes in (("csv", _CSV), ("parquet", _PARQUET), ("jsonl", _JSONL)):
        if name.endswith(suffixes):
            return fmt
    raise DataError(f"file '{path}': unknown table format; use .csv, .parquet or .jsonl")


def _readable(path: str | Path) -> tuple[Path, str]:
    """(path, format) of an existing, non-empty table file; else a `DataError` naming it."""
    path = Path(path)
    fmt = table_format(path)
    if not path.is_file():
        raise DataError(f"file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"file '{path}' is empty; it needs a header row and at least one data row")
    return path, fmt


def read_table(path: str | Path) -> pd.DataFrame:
    """The whole table; a missing or empty file is a `DataError` naming it."""
    path, fmt = _readable(path)
    try:
        if fmt == "csv":
            frame = pd.read_csv(path, sep="\t" if str(path).endswith(".tsv") else ",", encoding_errors="replace")
        elif fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=True)
    except (ValueError, pd.errors.ParserError, OSError) as err:
        raise DataError(f"file '{path}' could not be read as {fmt}: {str(err).splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"file '{path}' has no data rows")
    return frame


def as_frame(data: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A DataFrame as it is, or the table file at a path (`read_table`): what every entry point taking
    "a DataFrame or a .csv/.parquet/.jsonl file" reads its rows with."""
    return data if isinstance(data, pd.DataFrame) else read_table(data)


def iter_table(path: str | Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    """Stream a table in frames of at most `batch_rows` rows, so memory does not grow with the file."""
    path, fmt = _readable(path)
    try:
        if fmt == "csv":
            sep = "\t" if str(path).endswith(".tsv") else ","
            yield from pd.read_csv(path, sep=sep, chunksize=batch_rows, encoding_errors="replace")
        elif fmt == "jsonl":
            yield from pd.read_json(path, lines=True, chunksize=batch_rows)
        else:
            import pyarrow.parquet as pq

            for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                yield record_batch.to_pandas()
    except (ValueError, pd.errors.ParserError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"file '{path}' could not be read as {fmt}: {str(err).splitlines()[0]}") from None


def count_rows(path: str | Path) -> int:
    """Data rows in a table file, without holding it in memory (for a progress total): Parquet's metadata, the
    JSON Lines' non-empty lines, a CSV parsed one column at a time (quoted fields may span lines)."""
    path, fmt = _readable(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        if fmt == "jsonl":
            import gzip

            opener = gzip.open if str(path).endswith(".gz") else open
            with opener(path, "rb") as handle:
                return sum(1 for line in handle if line.strip())
        sep = "\t" if str(path).endswith(".tsv") else ","
        return sum(len(part) for part in pd.read_csv(path, sep=sep, usecols=[0], chunksize=100_000,
                                                     encoding_errors="replace"))
    except (ValueError, pd.errors.ParserError, OSError) as err:
        raise DataError(f"file '{path}' could not be read as {fmt}: {str(err).splitlines()[0]}") from None


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    fmt = table_format(path)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
