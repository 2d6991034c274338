"""Whole-row preprocessing: text cells → chunked threads, tabular columns → arrays, labels → ids.

`RowPreprocessor` covers every column a row has (dialogue, numeric and categorical features, label); the tabular
part is its `tabular`, a `data.tabular.TabularPreprocessor` (numeric and categorical columns only). It is fitted
on the training split only and saved as JSON inside a bundle.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..errors import DataError, show
from .dataset import EncodedTable
from .labels import class_order, label_type, typed_labels
from .tabular import TabularPreprocessor, category_key, require_columns
from .text import TextPipeline


class RowPreprocessor:
    """Fitted preprocessing of whole rows for one config: the tabular state (`TabularPreprocessor`) + label names
    in class-id order (`data.labels.class_order`) and their type (`label_type`: how predictions are given back;
    None for a bundle written before types were stored: strings); text needs only the tokenizer.

    A fusion that reads no text (tab_only) has no text pipeline: its tables need no text column and are never
    tokenised.
    """

    def __init__(self, cfg: Config, tokenizer, tabular: TabularPreprocessor, label_names: list[str],
                 label_type: str | None = None):
        self.cfg = cfg
        self.tabular = tabular
        self.label_names = label_names
        self.label_type = label_type
        self.tokenizer = tokenizer
        self.text = TextPipeline(cfg.text, tokenizer) if cfg.model.uses_text else None

    @property
    def text_columns(self) -> list[str]:
        """The text columns an input table needs: none when the fusion reads no text."""
        return list(self.cfg.data.text) if self.text is not None else []

    @property
    def label_values(self) -> list[Any]:
        """The class names as the training label column held them (0 and 1, not '0' and '1'), in class-id order."""
        return typed_labels(self.label_names, self.label_type)

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    @classmethod
    def fit(cls, cfg: Config, tokenizer, train: pd.DataFrame) -> "RowPreprocessor":
        data = cfg.data
        text_columns = list(data.text) if cfg.model.uses_text else []
        require_columns(train, [*text_columns, data.label], "training data")
        tabular = TabularPreprocessor.fit(train, data.numeric, data.categorical, label=data.label, id_column=data.id,
                                          min_category_count=data.min_category_count)
        names = class_order(cfg, train)
        if len(names) != cfg.model.num_classes:
            raise DataError(
                f"column '{data.label}' has {len(names)} classes {names[:10]} but model.num_classes is {cfg.model.num_classes}; set model.num_classes: {len(names)}"
            )
        return cls(cfg, tokenizer, tabular, names, label_type(train[data.label], names))

    def encode_labels(self, frame: pd.DataFrame) -> np.ndarray:
        column = self.cfg.data.label
        index = {name: i for i, name in enumerate(self.label_names)}
        out = np.empty(len(frame), dtype=np.int64)
        for row, value in enumerate(frame[column]):
            key = category_key(value)
            if key not in index:
                raise DataError(
                    f"column '{column}' row {row}: label {show(value)} is not one of the training labels {self.label_names}"
                )
            out[row] = index[key]
        return out

    def row_ids(self, frame: pd.DataFrame) -> list[Any]:
        column = self.cfg.data.id
        if column is None:
            return list(range(len(frame)))
        require_columns(frame, [column], "input data")
        return frame[column].tolist()

    def encode_text(self, frame: pd.DataFrame) -> list | None:
        """The frame's chunked threads (`ChunkedThread` per row); None without a text pipeline (tab_only)."""
        if self.text is None:
            return None
        require_columns(frame, self.text_columns, "input data")
        return self.text.encode(list(frame[self.text_columns].itertuples(index=False, name=None)))

    def encode(self, frame: pd.DataFrame, *, with_labels: bool = True, threads: list | None = None) -> EncodedTable:
        """Tokenise and transform a frame (text is tokenised once here, not per epoch; not at all without a text
        pipeline, when the table's `threads` is None). `threads`: this frame's `encode_text`, computed already
        (neural members of one ensemble share one tokenising pass)."""
        if threads is None:
            threads = self.encode_text(frame)
        numeric, categorical = self.tabular.transform(frame)
        labels = self.encode_labels(frame) if with_labels else None
        return EncodedTable(threads=threads, numeric=numeric, categorical=categorical, labels=labels, ids=self.row_ids(frame))

    def state(self) -> dict[str, Any]:
        return {"tabular": self.tabular.to_dict(), "label_names": self.label_names, "label_type": self.label_type}

    def to_json(self) -> str:
        return json.dumps(self.state(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, cfg: Config, tokenizer, text: str) -> "RowPreprocessor":
        state = json.loads(text)
        return cls(cfg, tokenizer, TabularPreprocessor.from_dict(state["tabular"]), list(state["label_names"]),
                   state.get("label_type"))


