"""Everything the tests share: tiny configs, synthetic tables, tolerances, a loopback server, CLI runners.

Test modules import from here (`from tests.helpers import ...`), never from one another; conftest.py holds only
fixtures and hooks (the session's bundle factory among them, built on `BundleFactory` below)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bsmfusion.config import Config, config_from_dict

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED_DATA = ROOT.parent / "shared" / "data"

# ---------------------------------------------------------------- configs
# a tiny randomly initialised BERT (2 layers, hidden 32) over the bundled MiniLM vocabulary
TINY_BERT = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512,
}


def tiny_config(fusion: str = "concat", **sections) -> Config:
    """A config using the tiny BERT; `sections` override whole sections' keys, e.g. text={"max_chunks": 2}."""
    raw = {
        "data": {"text": "dialogue", "numeric": ["price", "ratio"], "categorical": ["category"], "label": "label"},
        "text": {"encoder": "minilm", "encoder_config": TINY_BERT, "max_chunks": 3, "chunk_tokens": 16},
        "model": {"fusion": fusion, "hidden_dim": 8, "num_heads": 2, "dropout": 0.0},
        "train": {"epochs": 1, "batch_size": 8, "seed": 0, "precision": "fp32"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return config_from_dict(raw)


def fast_config(fusion: str, epochs: int = 8, **train_overrides) -> Config:
    """tiny_config with data.id and settings that learn a planted signal in a few epochs (fp32, lr 3e-3)."""
    return tiny_config(
        fusion, data={"id": "id"}, text={"pooling": "cls", "max_chunks": 2, "chunk_tokens": 32},
        train={"epochs": epochs, "batch_size": 16, "precision": "fp32", "lr": 3e-3, "head_lr": 3e-3,
               "patience": 50, "warmup_ratio": 0.0, **train_overrides},
    )


# fewer boosting rounds than the defaults (2,000 / 1,000): the planted tasks converge in well under 200 (CatBoost,
# at a higher learning rate: 100), CatBoost on one thread (the test machines are small and shared)
# gbdt_text svd: one text design per gbdt fit (auto boosts two); tests/classical/test_gbdt_text.py covers the others
FAST_CLASSICAL = {"gbdt_max_rounds": 200, "gbdt_early_stopping_rounds": 20, "gbdt_text": "svd",
                  "catboost_iterations": 100, "catboost_learning_rate": 0.3, "catboost_early_stopping_rounds": 10,
                  "catboost_thread_count": 1}


def classical_config(kind: str, **model) -> Config:
    """tiny_config with data.id and fast LightGBM / CatBoost settings; `model` overrides model keys."""
    cfg = tiny_config(kind, data={"id": "id"})
    for key, value in FAST_CLASSICAL.items():
        setattr(cfg.model.classical, key, value)
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def ensemble_config(members=("neural", "tfidf_lr", "gbdt"), num_classes: int = 2) -> Config:
    cfg = fast_config("ensemble", epochs=1)  # the neural member: tiny BERT, fp32, one epoch
    cfg.model.num_classes = num_classes
    cfg.model.ensemble.neural = "gate"
    cfg.model.ensemble.members = list(members)
    cfg.model.ensemble.neural_seeds = 1  # one neural member: the default two only double the time here
    for key, value in FAST_CLASSICAL.items():
        setattr(cfg.model.classical, key, value)
    return cfg


# ---------------------------------------------------------------- precisions
# bf16 keeps 8 significant bits: one rounding moves a value by up to 2^-8 relative (0.4%). Through the tiny
# models here (logits of size ≲ 2, a handful of rounded layers) a logit moves by ≲ 4 · 2^-8 · 2 ≈ 0.03, and a
# probability by at most a quarter of that (the sigmoid's slope is ≤ 1/4): 0.008, rounded up to 0.01.
BF16_PROB_TOL = 0.01
FP32_PROB_TOL = 1e-5


def _precision_params():
    from bsmfusion.precision import fast_bf16

    native, reason = fast_bf16("cpu")
    skip = pytest.mark.skipif(not native, reason=f"bf16 is emulated on this CPU ({reason}): too slow to test")
    return [pytest.param("fp32", id="fp32"), pytest.param("bf16", id="bf16", marks=skip)]


PRECISIONS = _precision_params()


def prob_tolerance(precision: str) -> float:
    """The probability tolerance a comparison between two code paths gets in `precision`."""
    return BF16_PROB_TOL if precision == "bf16" else FP32_PROB_TOL


# ---------------------------------------------------------------- tables
def make_frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """A small table with dialogue, two numerics (one with NaN), one categorical and a binary label."""
    rng = np.random.default_rng(seed)
    words = ["refund", "shipping", "broken", "thanks", "price", "offer", "deal", "late", "great", "box"]
    rows = []
    for i in range(n):
        turns = rng.integers(1, 6)
        dialogue = " <eos> ".join(
            f"{'BUYER' if t % 2 == 0 else 'SELLER'}: " + " ".join(rng.choice(words, rng.integers(2, 12)))
            for t in range(turns)
        )
        rows.append({
            "id": f"r{i}", "dialogue": dialogue, "price": float(rng.normal(100, 30)) if i % 7 else np.nan,
            "ratio": float(rng.uniform()), "category": rng.choice(["a", "b", "c"]), "label": int(rng.integers(0, 2)),
        })
    return pd.DataFrame(rows)


FILLER = ["hello", "item", "price", "ship", "today", "thanks", "ok", "sure", "box", "color", "size", "when"]


def planted_frame(n: int, signal: str, seed: int) -> pd.DataFrame:
    """label = keyword in text (`text`), x > 0 (`tab`), or keyword XOR x > 0 (`interaction`)."""
    rng = np.random.default_rng(seed)
    keyword = rng.integers(0, 2, n).astype(bool)
    x = rng.normal(size=n)
    rows = []
    for i in range(n):
        words = list(rng.choice(FILLER, rng.integers(3, 8)))
        if keyword[i]:
            words.insert(int(rng.integers(0, len(words))), "refund")
        rows.append(f"BUYER: {' '.join(words)} <eos> SELLER: {' '.join(rng.choice(FILLER, 3))}")
    label = {"text": keyword, "tab": x > 0, "interaction": keyword ^ (x > 0)}[signal].astype(int)
    return pd.DataFrame({
        "id": np.arange(n), "dialogue": rows, "price": x, "ratio": rng.normal(size=n),
        "category": rng.choice(["a", "b"], n), "label": label,
    })


def planted_thread(n: int, seed: int, keyword: str = "refund") -> pd.DataFrame:
    """Threads of 3 to 5 short BUYER/SELLER messages; label = `keyword` in the thread, planted in one message chosen
    at random (`planted_message`: its 0-based index, -1 on negative rows). price, ratio and category are noise."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    rows, where = [], []
    for i in range(n):
        count = int(rng.integers(3, 6))
        messages = [list(rng.choice(FILLER, rng.integers(2, 5))) for _ in range(count)]
        at = int(rng.integers(0, count)) if label[i] else -1
        if label[i]:
            messages[at].insert(int(rng.integers(0, len(messages[at]) + 1)), keyword)
        rows.append(" <eos> ".join(f"{('BUYER', 'SELLER')[k % 2]}: {' '.join(m)}" for k, m in enumerate(messages)))
        where.append(at)
    return pd.DataFrame({"id": np.arange(n), "dialogue": rows, "price": rng.normal(size=n), "ratio": rng.normal(size=n),
                         "category": rng.choice(["a", "b"], n), "label": label, "planted_message": where})


def planted_offers(n: int, seed: int) -> pd.DataFrame:
    """Bargaining threads: the buyer opens, the seller answers with a price, the buyer's last offer is a share r ~
    U(0.5, 1) of `price` (the list price, U(100, 1000)); label = r < 0.75: the last offer against the list price,
    a signal only the two together carry (neither the quoted numbers nor the price alone). ratio and category are
    noise."""
    rng = np.random.default_rng(seed)
    price = np.round(rng.uniform(100, 1000, n))
    share = rng.uniform(0.5, 1.0, n)
    rows = []
    for i in range(n):
        opening, ask, last = (round(price[i] * rng.uniform(0.4, 0.6)), round(price[i] * rng.uniform(0.9, 1.0)),
                              round(price[i] * share[i]))
        rows.append(f"BUYER: {' '.join(rng.choice(FILLER, 3))} would you take ${opening}? <eos> "
                    f"SELLER: {' '.join(rng.choice(FILLER, 2))} {ask:,} is my price <eos> BUYER: ok, {last} then")
    return pd.DataFrame({"id": np.arange(n), "dialogue": rows, "price": price, "ratio": rng.normal(size=n),
                         "category": rng.choice(["a", "b"], n), "label": (share < 0.75).astype(int)})


# 120 made-up five-letter words, random letters (a few share a char 3-gram); the first 12 mark a positive thread
PHRASE_WORDS = ["".join(w) for w in np.random.default_rng(11).choice(list("abcdefghijklmnopqrstuvwxyz"), (120, 5))]


def planted_phrases(n: int, seed: int) -> pd.DataFrame:
    """Threads of 6 words drawn from `PHRASE_WORDS`; label = the thread holds one of its first 12 (≈ 47% of rows).
    12 separate words among 120: no handful of SVD directions isolates them, a tree on the word columns reads
    each. price, ratio and category are noise."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(PHRASE_WORDS), size=(n, 6))
    rows = [f"BUYER: {' '.join(PHRASE_WORDS[j] for j in pick[:3])} <eos> SELLER: "
            f"{' '.join(PHRASE_WORDS[j] for j in pick[3:])}" for pick in picks]
    return pd.DataFrame({"id": np.arange(n), "dialogue": rows, "price": rng.normal(size=n),
                         "ratio": rng.normal(size=n), "category": rng.choice(["a", "b"], n),
                         "label": (picks < 12).any(axis=1).astype(int)})


def planted(n: int, signal: str, seed: int) -> pd.DataFrame:
    """planted_frame plus `nonlinear`: label = |price| > 0.8 (a tabular signal no linear model can use), and
    `thread`: `planted_thread` (the keyword in one random message of several)."""
    if signal == "thread":
        return planted_thread(n, seed)
    if signal != "nonlinear":
        return planted_frame(n, signal, seed)
    frame = planted_frame(n, "tab", seed)
    frame["label"] = (np.abs(frame["price"]) > 0.8).astype(int)
    return frame


def mixed(n: int, seed: int) -> pd.DataFrame:
    """Both modalities matter additively: logit = ±2.5 (keyword) + 2.5·price, label drawn from it."""
    frame = planted_frame(n, "text", seed)
    keyword = frame["dialogue"].str.contains("refund").to_numpy()
    logit = 2.5 * (2 * keyword - 1) + 2.5 * frame["price"].to_numpy()
    frame["label"] = (np.random.default_rng(seed + 100).uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def frame_for(signal: str, n: int, seed: int) -> pd.DataFrame:
    """`mixed(n, seed)` for signal "mixed", else `planted(n, signal, seed)` (text, tab, interaction, nonlinear)."""
    return mixed(n, seed) if signal == "mixed" else planted(n, signal, seed)


# 20 validation rows with scores 0.05, 0.10, ..., 1.00; the positives are the rows scored (×20) 20, 19, 18, 16,
# 15, 12, 10 and 6. Walking down from the top score (tp, fp; precision; recall of 8):
#   1.00 (1,0) 1 1/8 · 0.95 (2,0) 1 2/8 · 0.90 (3,0) 1 3/8 · 0.85 (3,1) .75 · 0.80 (4,1) .80 4/8 ·
#   0.75 (5,1) .833 5/8 · 0.70 (5,2) · 0.65 (5,3) · 0.60 (6,3) .667 6/8 · 0.55 (6,4) · 0.50 (7,4) .636 7/8 ·
#   0.45–0.35 (7,5–7) · 0.30 (8,7) .533 8/8 · below: only negatives.
# F1 = 2tp / (tp + fp + 8) peaks at 0.50: 14/19 = 0.737.
SCORES = np.arange(1, 21) / 20
LABELS = np.isin(np.arange(1, 21), [20, 19, 18, 16, 15, 12, 10, 6]).astype(int)


# ---------------------------------------------------------------- the CLI in a subprocess
def write_train_inputs(folder: Path, cfg: Config) -> None:
    """cfg.yaml, train.csv (160 planted text rows) and val.csv (64) in `folder`, for `cli_train`."""
    import yaml

    from bsmfusion.data.io import write_table

    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    write_table(planted_frame(160, "text", 0), folder / "train.csv")
    write_table(planted_frame(64, "text", 1), folder / "val.csv")


def cli_train(folder: Path, out: Path, *extra, env=None, launcher=()) -> subprocess.CompletedProcess:
    """`bsmfusion train` on `write_train_inputs`' files in a subprocess (`launcher`: e.g. torchrun's argv)."""
    cmd = [*launcher, "-m", "bsmfusion", "train", "--config", str(folder / "cfg.yaml"), "--train",
           str(folder / "train.csv"), "--val", str(folder / "val.csv"), "--out", str(out), "--quiet", *extra]
    if not launcher:
        cmd = [sys.executable, *cmd]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600, cwd=ROOT)


# ---------------------------------------------------------------- serving
@contextlib.contextmanager
def running(app):
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL once /healthz answers."""
    import httpx
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


# ---------------------------------------------------------------- optimiser groups (also used by fsdp_cpu_groups.py)
def group_record(module, optimizer) -> list[dict]:
    """Per optimiser group: base lr (before the schedule), weight decay, and each parameter's canonical name and
    element count."""
    from bsmfusion.training.optim import canonical_name

    names = {id(p): canonical_name(n) for n, p in module.model.named_parameters()}
    return [{"lr": group.get("initial_lr", group["lr"]), "weight_decay": group["weight_decay"],
             "params": [[names[id(p)], p.numel()] for p in group["params"]]} for group in optimizer.param_groups]


# ---------------------------------------------------------------- tiny trained bundles, once per session
CLASSICAL_KINDS = ("tfidf_lr", "gbdt", "catboost")


@dataclass
class TrainedBundle:
    """A bundle the session's factory trained. Shared by every test that asks for the same spec: read it, load it,
    score with it; to change it (tamper, export into it) work on `copy_to(folder)`."""

    path: Path
    result: Any  # the TrainResult `train` returned
    spec: dict

    def copy_to(self, folder: Path) -> Path:
        """A private copy of the bundle at `folder` (which must not exist yet); returns `folder`."""
        shutil.copytree(self.path, folder)
        return folder


def bundle_config(fusion: str, *, epochs: int = 1, base: str | None = None, settings: dict | None = None) -> Config:
    """The config `BundleFactory` trains: `fast_config(fusion, epochs)` for a neural fusion,
    `classical_config(kind)` for tfidf_lr / gbdt / catboost, `ensemble_config()` (its neural member `epochs`) for "ensemble";
    base="tiny" takes `tiny_config(fusion)` instead (no data.id). `settings` sets dotted keys afterwards,
    e.g. {"train.calibration": "none"}."""
    if base == "tiny":
        cfg = tiny_config(fusion)
    elif base is not None:
        raise ValueError(f"unknown base config {base!r}")
    elif fusion in CLASSICAL_KINDS:
        cfg = classical_config(fusion)
    elif fusion == "ensemble":
        cfg = ensemble_config()
        cfg.train.epochs = epochs
    else:
        cfg = fast_config(fusion, epochs=epochs)
    for dotted, value in (settings or {}).items():
        *parents, name = dotted.split(".")
        target = cfg
        for part in parents:
            target = getattr(target, part)
        setattr(target, name, value)
    return cfg


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class BundleFactory:
    """Trains each distinct tiny bundle once and hands the same one to every test that asks for it.

    factory(fusion, signal="text", rows=(64, 32), epochs=1, base=None, settings=None) trains
    `bundle_config(fusion, ...)` on `frame_for(signal, rows[0], seed 0)` with `frame_for(signal, rows[1], seed 1)`
    for validation; everything that shapes the bundle is in the cache key. `check_unchanged()` (run when the session
    ends) fails if a test changed a shared bundle instead of its `copy_to` copy."""

    def __init__(self, root: Path):
        self.root = root
        self._bundles: dict[str, TrainedBundle] = {}
        self._digests: dict[str, dict[str, str]] = {}

    def __call__(self, fusion: str, *, signal: str = "text", rows: tuple[int, int] = (64, 32), epochs: int = 1,
                 base: str | None = None, settings: dict | None = None) -> TrainedBundle:
        spec = {"fusion": fusion, "signal": signal, "rows": list(rows), "epochs": epochs, "base": base,
                "settings": settings or {}}
        key = json.dumps(spec, sort_keys=True)
        if key not in self._bundles:
            from bsmfusion.workflows.train import train

            cfg = bundle_config(fusion, epochs=epochs, base=base, settings=settings)
            name = f"{fusion}-{signal}-{rows[0]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
            path = self.root / name / "model"
            result = train(cfg, frame_for(signal, rows[0], 0), frame_for(signal, rows[1], 1), path, progress=False)
            self._bundles[key] = TrainedBundle(path, result, spec)
            self._digests[key] = _digests(path)
        return self._bundles[key]

    def check_unchanged(self) -> None:
        changed = [bundle.spec for key, bundle in self._bundles.items() if _digests(bundle.path) != self._digests[key]]
        assert not changed, f"a test changed a shared bundle (use TrainedBundle.copy_to): {changed}"


# ------------------------------------------------------------------ growing threads (chunk-vector cache)
FP32 = 1e-6  # fp32 scores with and without the chunk cache
SCORE_COLUMNS = ["prob_0", "prob_1", "text_contribution", "tab_contribution"]


def thread_lines(n: int) -> list[str]:
    words = ["refund", "shipping", "broken", "thanks", "price", "offer", "deal", "late", "great", "box"]
    return [f"{'BUYER' if i % 2 == 0 else 'SELLER'}: " + " ".join(words[(i + j) % 10] for j in range(2 + (5 * i) % 9))
            for i in range(n)]


def growing_frame(lines: list[str]) -> pd.DataFrame:
    """One row per prefix of the thread: the thread after its 1st, 2nd, ... message."""
    return pd.DataFrame([{"id": f"t{k}", "dialogue": "\n".join(lines[:k]), "price": 120.0, "ratio": 0.3,
                          "category": "b"} for k in range(1, len(lines) + 1)])


def assert_same_scores(a: pd.DataFrame, b: pd.DataFrame, atol: float = FP32) -> None:
    assert list(a["id"]) == list(b["id"])
    for column in SCORE_COLUMNS:
        np.testing.assert_allclose(a[column].to_numpy(), b[column].to_numpy(), atol=atol, rtol=0, err_msg=column)
    # text_share = |text| / (|text| + |tab|) divides by the contributions: ~1e-7 on two values of ~1e-3 moves it ~1e-5
    np.testing.assert_allclose(a["text_share"].to_numpy(), b["text_share"].to_numpy(), atol=20 * atol, rtol=0)


# ------------------------------------------------------------------ untrained bundles (scoring needs no training)
def random_bundle(path: Path, fusion: str = "gate", *, id_column: str | None = "id", sign_key=None, **text) -> Path:
    """A bundle of the tiny BERT with random weights (fp32 pinned; `text` overrides text keys): for tests of how a
    bundle is scored, stored or signed, where what it learned does not matter."""
    import torch

    from bsmfusion.bundle import write_bundle
    from bsmfusion.data.preprocess import RowPreprocessor
    from bsmfusion.data.text import load_tokenizer, tokenizer_source
    from bsmfusion.models.classifier import build_model

    cfg = tiny_config(fusion, data={"id": id_column}, text={"max_chunks": 3, "chunk_tokens": 16, "pooling": "mean",
                                                            **text}, train={"precision": "fp32"})
    tokenizer = load_tokenizer(tokenizer_source(cfg.text))
    preprocessor = RowPreprocessor.fit(cfg, tokenizer, make_frame(40))
    torch.manual_seed(1)
    model = build_model(cfg, preprocessor.tabular.numeric_dim, preprocessor.tabular.cardinalities).eval()
    return write_bundle(path, cfg=cfg, preprocessor=preprocessor, tokenizer=tokenizer, model=model, threshold=0.5,
                        metrics={}, sign_key=sign_key)
