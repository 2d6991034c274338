"""The three benchmark tasks of ../shared/benchmarks/TASKS.md, loaded from ../shared/data (never copied)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Task:
    name: str
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    data: dict  # the config's data section

    def config(self, fusion: str, **sections) -> dict:
        raw = {"data": dict(self.data), "model": {"fusion": fusion, "num_classes": 2}}
        for section, values in sections.items():
            raw.setdefault(section, {}).update(values)
        return raw


def dnd_nodeal(root: Path = DATA) -> Task:
    frame = pd.read_csv(root / "dealornodeal" / "dnd_flat.csv")
    frame = frame[frame["outcome"] != "disconnect"].reset_index(drop=True)
    frame["label"] = (frame["outcome"] != "agree").astype(int)
    frame["row_id"] = np.arange(len(frame))
    # the two sides of one dialogue: same item counts, same turns with YOU/THEM swapped. Given as data.group so
    # the ensemble's holdout and CV folds never hold out a row whose twin trained the model
    turns = frame["dialogue"].str.replace(r"\b(?:YOU|THEM):", "X:", regex=True)
    frame["dialogue_id"] = pd.factorize(frame[["cnt_book", "cnt_hat", "cnt_ball"]].astype(str).agg("/".join, axis=1)
                                        + "|" + turns)[0]
    numeric = ["cnt_book", "val_book", "cnt_hat", "val_hat", "cnt_ball", "val_ball", "partner_val_book",
               "partner_val_hat", "partner_val_ball", "n_utterances"]
    data = {"text": "dialogue", "numeric": numeric, "categorical": ["first_speaker"], "label": "label", "id": "row_id",
            "group": "dialogue_id"}
    return Task("dnd_nodeal", *(frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")), data)


def cb_nosale(root: Path = DATA) -> Task:
    frame = pd.read_csv(root / "craigslist_bargains" / "cb_flat.csv")
    frame["label"] = (frame["outcome"] != "accept").astype(int)
    frame["text"] = frame["messages_only"].fillna("").str.replace(" ||| ", "\n", regex=False)
    frame["row_id"] = np.arange(len(frame))
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    pool = frame[frame["split"] == "dev"].reset_index(drop=True)
    rng = np.random.default_rng(7)
    val_index: list[int] = []
    for label in (0, 1):
        index = np.flatnonzero(pool["label"].to_numpy() == label)
        val_index += rng.choice(index, size=round(0.15 * len(index)), replace=False).tolist()
    is_val = np.zeros(len(pool), dtype=bool)
    is_val[val_index] = True
    data = {"text": "text", "numeric": ["list_price", "buyer_target", "seller_target", "n_messages"],
            "categorical": ["category", "first_speaker"], "label": "label", "id": "row_id"}
    return Task("cb_nosale", pool[~is_val].reset_index(drop=True), pool[is_val].reset_index(drop=True), test, data)


def clothing_recommend(root: Path = DATA) -> Task:
    folder = root / "womens_clothing_reviews"
    frame = pd.read_parquet(folder / "WomensClothingE-CommerceReviews.parquet.brotli").reset_index(drop=True)
    frame["row_id"] = np.arange(len(frame))
    frame["text"] = frame["Title"].fillna("") + " . " + frame["Review Text"].fillna("")
    frame["label"] = frame["Recommended IND"].astype(int)
    split = pd.read_csv(folder / "multimodal_toolkit_split" / "split_assignment.csv")
    frame = frame.merge(split, on="row_id", how="inner")
    column = [c for c in split.columns if c != "row_id"][0]
    data = {"text": "text", "numeric": ["Rating", "Age", "Positive Feedback Count"],
            "categorical": ["Division Name", "Department Name", "Class Name"], "label": "label", "id": "row_id"}
    return Task("clothing_recommend", *(frame[frame[column] == s].reset_index(drop=True) for s in ("train", "val", "test")), data)


TASKS = {"dnd_nodeal": dnd_nodeal, "cb_nosale": cb_nosale, "clothing_recommend": clothing_recommend}


def long_threads(frame: pd.DataFrame, text_column: str, tokenizer, min_tokens: int) -> list[str]:
    """Join consecutive threads of one split until each reaches `min_tokens` tokens (labels left out)."""
    out, current, count = [], [], 0
    for text in frame[text_column].fillna("").astype(str):
        current.append(text)
        count += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if count >= min_tokens:
            out.append("\n".join(current))
            current, count = [], 0
    return out
