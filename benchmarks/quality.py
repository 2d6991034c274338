"""Quality benchmark: the three tasks of ../shared/benchmarks/TASKS.md × model variants × seeds, test ROC-AUC as
mean ± sd over seeds with a bootstrap 95% CI, and the paired bootstrap difference to TF-IDF + numerics LR.
Writes benchmarks/results/quality.json (every run's summary, appended by key), quality_rows/ (one gzip JSON a
run: the per-row test/validation probabilities of the model and its members, and the members' per-row
contributions, that the bootstrap CIs and --recombine need, without the labels, which are read from the task
again; 10–80 KB a run) and quality.md (the table); all three are committed, so a later session can re-combine or
bootstrap runs it did not train. Every table (quality.md, quality_finetuned_v1.md and the generated blocks of
docs/benchmarks.md and README.md) is written from the JSON by quality_render.py, never by hand.
quality.json keeps one run a task × variant × seed, whatever the machine; runs compared for time on one machine
in one session go to `--results benchmarks/results/quality_amx.json` (quality_render.SAME_MACHINE; its own
quality_amx_rows/ and quality_amx.md, and the docs blocks that read it).

    .venv/bin/python benchmarks/quality.py --tasks dnd_nodeal,cb_nosale,clothing_recommend \
        --variants tfidf_lr,gbdt,frozen_gate,ensemble_frozen --seeds 0,1,2 [--max-train-rows N] [--epochs E]
    .venv/bin/python benchmarks/quality.py --render      # rewrite every table from the JSON (seconds, no data)
    .venv/bin/python benchmarks/quality.py --bootstrap   # recompute the stored CIs from quality_rows/ (needs data)
    .venv/bin/python benchmarks/quality.py --merge /tmp/q/quality.json  # add runs a snapshot worktree wrote

Variants (see VARIANTS): classical members on the full training sets; `frozen_*` train the heads over cached
MiniLM chunk vectors (full training sets); `tuned_*` fine-tune MiniLM (capped by --max-train-rows: say so).
A benchmark, not a test: hours on two CPU cores at full size; CI does not run it.
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality_render  # noqa: E402
from tasks import TASKS  # noqa: E402

import bsmfusion  # noqa: E402
from bsmfusion.config import config_from_dict  # noqa: E402
from bsmfusion.evaluation.metrics import classification_metrics  # noqa: E402
from bsmfusion.evaluation.operating_point import calibration_report  # noqa: E402
from bsmfusion.precision import cpu_capability, resolve_precision  # noqa: E402
from bsmfusion.workflows.train import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FROZEN = {"freeze_encoder": True, "epochs": 30, "patience": 4, "batch_size": 64, "head_lr": 1e-3}
TUNED = {"epochs": 2, "batch_size": 16, "lr": 5e-5, "head_lr": 1e-3, "patience": 2}
TUNED_PATIENCE = 2  # train.patience's default, which an ensemble's neural members used before neural_patience
# how ensembles trained before the cross-fitted combination and the first member's epoch count (stop 29): the
# neural members early-stopped with train.patience, each on its own holdout, the weights fitted on validation only
BEFORE = {"combine_on": "validation", "neural_epochs": "own", "neural_patience": TUNED_PATIENCE,
          "neural_checks_per_epoch": 1}
# gbdt as it was before the quoted numbers (stop 33) and the words reader (stop 34): every variant but `default` has
# it pinned under its own classical settings, so stored runs keep their meaning
SVD_ONLY = {"quoted_numbers": "off", "gbdt_text": "svd"}
# name → (model section, text section, train section); the training rows a variant uses are in FULL_DATA
VARIANTS: dict[str, tuple[dict, dict, dict]] = {
    "tfidf_lr": ({"fusion": "tfidf_lr"}, {}, {}),
    "gbdt": ({"fusion": "gbdt"}, {}, {}),
    "catboost": ({"fusion": "catboost"}, {}, {}),  # the optional member (bsmfusion[catboost]) alone
    # gbdt as an ensemble member fits it (rounds by 5-fold CV), its quoted-numbers block on auto
    "gbdt_quoted": ({"fusion": "gbdt", "classical": {"cv_folds": 5, "quoted_numbers": "auto"}}, {}, {}),
    # the same, gbdt_text on auto as well: the SVD or the word n-gram columns, whichever CV prefers
    "gbdt_words": ({"fusion": "gbdt", "classical": {"cv_folds": 5, "quoted_numbers": "auto", "gbdt_text": "auto"}},
                   {}, {}),
    "frozen_gate": ({"fusion": "gate"}, {}, FROZEN),
    "frozen_gate_attention": ({"fusion": "gate"}, {"chunk_reduce": "attention"}, FROZEN),
    "frozen_concat": ({"fusion": "concat"}, {}, FROZEN),
    "frozen_cross_attn": ({"fusion": "cross_attn"}, {}, FROZEN),
    "frozen_text_only": ({"fusion": "text_only"}, {}, FROZEN),
    # ensembles measured with ONE neural member (before neural_seeds: 2): pinned so stored runs keep their meaning
    "ensemble_frozen": ({"fusion": "ensemble", "ensemble": {"neural": "gate", "neural_seeds": 1, **BEFORE,
                                                            "neural_patience": FROZEN["patience"]}}, {}, FROZEN),
    "tuned_gate": ({"fusion": "gate"}, {}, TUNED),
    "tuned_text_only": ({"fusion": "text_only"}, {}, TUNED),
    "ensemble_tuned": ({"fusion": "ensemble", "ensemble": {"neural": "gate", "neural_seeds": 1, **BEFORE}}, {}, TUNED),
    # fine-tuned concat + tfidf_lr + gbdt, default settings but ONE neural member: the default until neural_seeds
    # became 2 (its stored runs are the members the re-combinations below start from)
    "ensemble_default": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 1, **BEFORE}}, {}, {}),
    # the default ensemble with cross_attn as its fine-tuned member (frozen cross_attn led on clothing and cb_nosale)
    "ensemble_cross_attn": ({"fusion": "ensemble", "ensemble": {"neural": "cross_attn", "neural_seeds": 1, **BEFORE}},
                            {}, {}),
    # the default ensemble whose neural member is refitted on all training rows for its best holdout epoch count
    "ensemble_refit": ({"fusion": "ensemble", "ensemble": {"refit_neural": True, "neural_seeds": 1, **BEFORE}}, {}, {}),
    # the default ensemble: two fine-tuned neural members (seeds s and s + 1, each its own holdout), trained directly
    "ensemble_neural_seeds2": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 2, **BEFORE}}, {}, {}),
    # the default ensemble's neural member alone (weight 1): the same member `ensemble_default` trains for that seed,
    # without the classical members' cost — what `neural_seeds2_recombined` borrows for seed s + 1
    "ensemble_neural_only": ({"fusion": "ensemble", "ensemble": {"members": ["neural"], "neural_seeds": 1, **BEFORE}},
                             {}, {}),
    # the default as of stop 29 (two fine-tuned members, cross-fitted combination), pinned: the baseline that
    # issue 26's training-time target halves
    "ensemble_stop29": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 2, **BEFORE, "combine_on": "cross_fit"}},
                        {}, {}),
    # the same, but the first member early-stops at patience 1 and neural_2 stops at the step where it scored best,
    # on the same learning-rate schedule (today's default). Its stored dnd_nodeal run of the name
    # ensemble_first_epochs trained neural_2 on a schedule fitted to that step count instead (commit 69e4ef5): the
    # code offers that no more
    "ensemble_first_steps": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 2, "combine_on": "cross_fit",
                                                                  "neural_epochs": "first", "neural_patience": 1,
                                                                  "neural_checks_per_epoch": 1}}, {}, {}),
    # the same, the first member's holdout scored twice an epoch: it stops half an epoch past its best, and
    # neural_2 trains its best step count
    "ensemble_half_checks": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 2, "combine_on": "cross_fit",
                                                                 "neural_epochs": "first", "neural_patience": 1,
                                                                 "neural_checks_per_epoch": 2}}, {}, {}),
    # today's default with CatBoost (native text and categorical handling) as a fourth member: a cheap, diverse
    # member on every training row (issue 26's point 2); its other members are the default's, bit for bit
    "ensemble_catboost": ({"fusion": "ensemble", "ensemble": {"members": ["neural", "tfidf_lr", "gbdt", "catboost"],
                                                               "neural_seeds": 2, "combine_on": "cross_fit",
                                                               "neural_epochs": "first", "neural_patience": 1,
                                                               "neural_checks_per_epoch": 1}}, {}, {}),
    # today's default with gbdt's quoted-numbers block on auto (each role's last and first quoted number, their
    # gap and their ratios to the numeric columns; kept when it lowers gbdt's 5-fold CV log loss): the other
    # members are the default's, bit for bit
    "ensemble_quoted": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 2, "combine_on": "cross_fit",
                                                             "neural_epochs": "first", "neural_patience": 1,
                                                             "neural_checks_per_epoch": 1},
                         "classical": {"quoted_numbers": "auto"}}, {}, {}),
    # today's default (gbdt_text: auto — gbdt reads the SVD or the word n-gram columns, whichever its 5-fold CV
    # log loss prefers; quoted_numbers: auto): the other members are ensemble_quoted's, bit for bit
    "ensemble_words": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 2, "combine_on": "cross_fit",
                                                            "neural_epochs": "first", "neural_patience": 1,
                                                            "neural_checks_per_epoch": 1},
                        "classical": {"quoted_numbers": "auto", "gbdt_text": "auto"}}, {}, {}),
    # ensemble_words with the neural members' embeddings and lowest 3 of MiniLM's 6 layers kept pretrained
    # (train.freeze_layers: 3): the backward pass ends at layer 3; the classical members are ensemble_words', bit
    # for bit
    "ensemble_freeze3": ({"fusion": "ensemble", "ensemble": {"neural_seeds": 2, "combine_on": "cross_fit",
                                                              "neural_epochs": "first", "neural_patience": 1,
                                                              "neural_checks_per_epoch": 1},
                          "classical": {"quoted_numbers": "auto", "gbdt_text": "auto"}}, {}, {"freeze_layers": 3}),
    # what `bsmfusion train` builds when the config names nothing (its stored cb_nosale / dnd_nodeal seed-0 rows
    # predate the ensemble default: one concat model)
    "default": ({}, {}, {}),
}
# ensemble_words with gbdt bagged (model.classical.gbdt_bagged): its 5 CV fold boosters averaged instead of one
# refitted on all training rows; the other members are ensemble_words', bit for bit
VARIANTS["ensemble_bagged"] = ({**VARIANTS["ensemble_words"][0],
                                "classical": {**VARIANTS["ensemble_words"][0]["classical"], "gbdt_bagged": True}},
                               {}, {})
FULL_DATA = {"tfidf_lr", "gbdt", "gbdt_quoted", "gbdt_words", "catboost", "frozen_gate", "frozen_gate_attention", "frozen_concat", "frozen_cross_attn",
             "frozen_text_only", "ensemble_frozen"}
BOOTSTRAP = 1000
# name → (the variant whose stored member scores it re-combines, config overrides): weights, calibration and
# threshold refitted on the stored validation scores by the library's own code (`fit_weights`, `fit_decision`),
# the members unchanged — what training with these settings would give, without fine-tuning the members again
RECOMBINED: dict[str, tuple[str, dict]] = {
    # `ensemble_neural_seeds2` without training: its neural_2 (seed s + 1, holdout drawn with s + 1) is the neural
    # member of `ensemble_default` seed s + 1 (bit-identical on one machine: tests/classical/test_ensemble.py), taken
    # from that run (see BORROWED); the seed means are then correlated (seeds s and s + 1 share a member)
    "neural_seeds2_recombined": ("ensemble_default", {"model": {"ensemble": {"neural_seeds": 2}}}),
    # the combination defaults (init_picks 5, calibration auto → platt) on members trained by `ensemble_default`
    # (one neural member)
    "default_recombined": ("ensemble_default", {}),
    # what `ensemble_default` was trained with before: one initial pick each, temperature scaling
    "ensemble_init1_temperature": ("ensemble_default", {"model": {"ensemble": {"init_picks": 1}},
                                                        "train": {"calibration": "temperature"}}),
    "ensemble_init1_platt": ("ensemble_default", {"model": {"ensemble": {"init_picks": 1}},
                                                  "train": {"calibration": "platt"}}),
    "ensemble_init5_temperature": ("ensemble_default", {"train": {"calibration": "temperature"}}),
    "ensemble_neural_tfidf": ("ensemble_default", {"model": {"ensemble": {"members": ["neural", "tfidf_lr"]}}}),
    "ensemble_plain_greedy": ("ensemble_default", {"model": {"ensemble": {"bags": 0, "init_picks": 0}}}),
    "ensemble_equal_weights": ("ensemble_default", {"model": {"ensemble": {"iterations": 1, "init_picks": 1000,
                                                                            "bags": 0}}}),
}


# recombined variant → {member it adds: [(variant, seed offset, that run's member), ...]}: the first stored one is used
BORROWED: dict[str, dict[str, list[tuple[str, int, str]]]] = {
    "neural_seeds2_recombined": {"neural_2": [("ensemble_default", 1, "neural"), ("ensemble_neural_only", 1, "neural")]},
}


def variant_config(task, name: str, seed: int, args) -> dict:
    model, text, train_section = VARIANTS[name]
    raw = task.config(model.get("fusion", "gate"),
                      text={"max_chunks": args.max_chunks, "chunk_tokens": args.chunk_tokens, **text},
                      train={"seed": seed, "checkpoint_every_steps": 100_000, **train_section})
    raw["model"] = {k: v for k, v in raw["model"].items() if k != "fusion"} | model
    if name != "default":
        raw["model"]["classical"] = {**SVD_ONLY, **model.get("classical", {})}
    if args.epochs and train_section is TUNED:
        raw["train"]["epochs"] = args.epochs
    return raw


def run_one(task, name: str, seed: int, args, work: Path) -> dict:
    train_df = task.train
    capped = name not in FULL_DATA and args.max_train_rows and len(train_df) > args.max_train_rows
    if capped:
        train_df = train_df.sample(n=args.max_train_rows, random_state=seed).reset_index(drop=True)
    cfg = config_from_dict(variant_config(task, name, seed, args), source=f"{task.name}/{name}")
    started, cpu_started = time.perf_counter(), time.process_time()
    result = train(cfg, train_df, task.val, work / f"{task.name}_{name}_{seed}", progress=False)
    fit_seconds = time.perf_counter() - started
    fit_cpu_seconds = time.process_time() - cpu_started  # every thread of this process: robust to other jobs
    predictor = bsmfusion.load(result.bundle_dir)
    started = time.perf_counter()
    scores = predictor.score_frame(task.test)
    predict_seconds = time.perf_counter() - started
    labels = predictor.bundle.preprocessor.encode_labels(task.test)
    metrics = classification_metrics(labels, scores.probs, predictor.threshold)
    calibration = calibration_report(labels, scores, predictor.calibration)
    members, member_scores, chosen = {}, {}, {}
    if cfg.model.fusion == "ensemble":  # each member alone on the test rows, beside its weight
        meta = json.loads((Path(result.bundle_dir) / "meta.json").read_text())
        # which rows chose what: each member's fit and choices, and the rows the combination was fitted on (the
        # test rows chose nothing: they are scored once, here)
        chosen = {"member_rows": meta.get("member_rows"), "combination_rows": meta.get("combination_rows")}
        for member in meta["members"]:  # member scores kept so combination rules can be compared offline
            member_predictor = bsmfusion.load(Path(result.bundle_dir) / "members" / member["name"])
            alone = member_predictor.score_frame(task.test)
            on_val = member_predictor.score_frame(task.val)
            own_meta = json.loads((Path(result.bundle_dir) / "members" / member["name"] / "meta.json").read_text())
            members[member["name"]] = {"weight": member["weight"], "val_roc_auc": member["validation"]["roc_auc"],
                                       "test_roc_auc": _auc(labels, alone.probs[:, 1]),
                                       **({"epochs_run": own_meta["epochs_run"]} if "epochs_run" in own_meta else {}),
                                       **({"train_seconds": member["train_seconds"]} if "train_seconds" in member
                                          else {})}
            member_scores[member["name"]] = {"test_prob": alone.probs[:, 1].round(6).tolist(),
                                             "val_prob": on_val.probs[:, 1].round(6).tolist(),
                                             "test_text": alone.text_contribution.round(6).tolist(),
                                             "test_tab": alone.tab_contribution.round(6).tolist()}
        member_scores["val_label"] = predictor.bundle.preprocessor.encode_labels(task.val).tolist()
    return {
        "task": task.name, "variant": name, "seed": seed, "fusion": cfg.model.fusion,
        "roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"], "f1": metrics["f1"],
        "accuracy": metrics["accuracy"], "val_roc_auc": result.val_metrics.get("roc_auc"),
        "train_rows": len(train_df), "epochs": result.epochs_run, "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu_seconds, 1),
        "predict_rows_per_s": round(len(task.test) / predict_seconds, 1),
        "text_share_mean": float(np.mean(scores.text_share)), "members": members,
        **({"chosen_on": chosen} if chosen else {}), "member_scores": member_scores,
        **({"gbdt_designs": designs} if (designs := gbdt_designs(Path(result.bundle_dir))) else {}),
        "calibration": {k: calibration[k] for k in ("method", "temperature", "ece_before", "ece_after", "log_loss_before",
                                                    "log_loss_after", "ece_if_perfectly_calibrated") if k in calibration},
        "test_prob": scores.probs[:, 1].round(6).tolist(), "test_label": labels.tolist(),
    }


def gbdt_designs(bundle: Path) -> dict | None:
    """What chose gbdt's design, from meta.json (a gbdt bundle's, or an ensemble's gbdt member's): the log loss of
    each design tried (CV mean, else validation) and the one kept; None when the bundle has no gbdt or its training
    predates `gbdt_text`."""
    folder = bundle / "members" / "gbdt" if (bundle / "members" / "gbdt").is_dir() else bundle
    meta = json.loads((folder / "meta.json").read_text())
    training = meta.get("training") or {}
    if meta.get("kind") != "gbdt" or "design_log_loss" not in training:
        return None
    kept = training.get("design") or (training["text"] + (" + quoted numbers" if training["quoted_numbers"]["used"]
                                                          else ""))  # runs of stop 34's first commit lack "design"
    return {"log_loss": training["design_log_loss"], "kept": kept, "chosen_on": training["chosen_on"]}


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _member_scores(probs, text=None, tab=None) -> "Scores":
    """Binary Scores whose log-odds are the stored P(positive)'s; the stored contributions `text` / `tab` when the
    run kept them (the rest of the log-odds is the baseline), else all of it in the baseline."""
    from bsmfusion.models.scores import Scores

    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    z = np.log(p / (1 - p))
    if text is None or tab is None:
        return Scores(np.stack([1 - p, p], axis=1), np.zeros_like(z), np.zeros_like(z), z)
    text, tab = np.asarray(text, dtype=np.float64), np.asarray(tab, dtype=np.float64)
    return Scores(np.stack([1 - p, p], axis=1), text, tab, z - text - tab)


def stored_run(runs: list[dict], task_name: str, variant: str, seed: int) -> dict | None:
    """The stored run of (task, variant, seed) that kept its members' scores, or None."""
    found = [r for r in runs if (r["task"], r["variant"], r["seed"]) == (task_name, variant, seed) and r.get("member_scores")]
    return found[0] if found else None


def borrowed_members(runs: list[dict], source: dict, name: str) -> dict[str, tuple[dict, str]] | None:
    """BORROWED[name]'s members for `source`'s seed: member name → (the run it comes from, its name there), or None
    when no such run is stored (or it trained on other rows than `source`, e.g. under --max-train-rows)."""
    borrowed = {}
    for member, sources in BORROWED.get(name, {}).items():
        found = [(run, as_member) for variant, offset, as_member in sources
                 if (run := stored_run(runs, source["task"], variant, source["seed"] + offset))
                 and run["train_rows"] == source["train_rows"]]
        if not found:
            return None
        borrowed[member] = found[0]
    return borrowed


def recombine(task, source: dict, name: str, args, borrowed: dict[str, tuple[dict, str]] | None = None) -> dict:
    """`source` (a stored ensemble run with member scores) with RECOMBINED[name]'s settings: the member subset, the
    weights, the calibration and the threshold refitted on the stored validation scores, then scored on test.
    `borrowed`: members taken from other stored runs (`borrowed_members`); their runs' fit time is added (an upper
    bound: a borrowed ensemble run's classical members are counted too)."""
    borrowed = borrowed or {}
    from bsmfusion.ensemble.selection import combine, fit_weights, member_logits
    from bsmfusion.decision import fit_decision

    base, overrides = RECOMBINED[name]
    raw = _merge(variant_config(task, base, source["seed"], args), overrides)
    cfg = config_from_dict(raw, source=f"{task.name}/{name}")
    stored = {**source["member_scores"], **{m: run["member_scores"][there] for m, (run, there) in borrowed.items()}}
    summaries = {**source["members"], **{m: run["members"][there] for m, (run, there) in borrowed.items()}}
    names = [m for m in cfg.model.ensemble.member_names if m in stored]
    y_val, y_test = np.array(stored["val_label"]), np.array(source["test_label"])
    val = [_member_scores(stored[m]["val_prob"]) for m in names]
    test = [_member_scores(stored[m]["test_prob"], stored[m].get("test_text"), stored[m].get("test_tab")) for m in names]
    split_stored = all("test_text" in stored[m] and "test_tab" in stored[m] for m in names)
    weights, _ = fit_weights(cfg, [member_logits(s, 2) for s in val], y_val, names)
    decided = fit_decision(cfg, y_val, combine(list(zip(weights, val)), 2)[1])
    scores = decided.calibration.apply(combine(list(zip(weights, test)), 2)[1])
    metrics = classification_metrics(y_test, scores.probs, decided.threshold)
    calibration = calibration_report(y_test, scores, decided.calibration)
    # what the members' runs measured (their machine's speed, one-member text_share) is not this combination's
    run = {k: v for k, v in source.items()
           if k not in ("member_scores", "calibration", "machine", "predict_rows_per_s", "text_share_mean", "note")}
    machines = [source] + [r for r, _ in borrowed.values()]
    run["members_machine"] = "; ".join(dict.fromkeys(r.get("machine") or r.get("members_machine") for r in machines))
    run["text_share_mean"] = float(np.mean(scores.text_share)) if split_stored else None
    if borrowed:
        run["borrowed"] = {m: f"{r['variant']}/{r['seed']}/{there}" for m, (r, there) in borrowed.items()}
        run["fit_seconds"] = source["fit_seconds"] + sum(r["fit_seconds"] for r, _ in borrowed.values())
    run.update(variant=name, recombined_from=base, roc_auc=metrics["roc_auc"], pr_auc=metrics["pr_auc"],
               f1=metrics["f1"], accuracy=metrics["accuracy"],
               val_roc_auc=classification_metrics(y_val, decided.scores.probs, None)["roc_auc"],
               members={m: {**summaries[m], "weight": float(w)} for m, w in zip(names, weights)},
               calibration={k: calibration[k] for k in ("method", "temperature", "scale", "bias", "ece_before",
                                                        "ece_after", "log_loss_before", "log_loss_after",
                                                        "ece_if_perfectly_calibrated") if k in calibration},
               test_prob=scores.probs[:, 1].round(6).tolist())
    return run


ROW_KEYS = ("test_prob", "test_label", "member_scores")  # per-row: in the rows files, not quality.json


def _rows_dir(results_path: Path) -> Path:
    return results_path.with_name(results_path.stem + "_rows")


def _rows_file(results_path: Path, run: dict) -> Path:
    return _rows_dir(results_path) / (_run_key(run).replace("/", "__") + ".json.gz")


def _task_labels(task_name: str) -> dict[str, list[int]]:
    """The validation and test label ids of a task (0/1: its label column), the labels the rows files leave out."""
    task = TASKS[task_name]()
    labels = {}
    for split, frame in (("val_label", task.val), ("test_label", task.test)):
        values = frame[task.data["label"]].to_numpy()
        assert set(np.unique(values)) <= {0, 1}, f"{task_name}: labels are not 0/1"
        labels[split] = values.astype(int).tolist()
    return labels


def load_runs(results_path: Path) -> list[dict]:
    """The runs of `results_path`, with their per-row scores and labels where a rows file has them."""
    runs = load_record(results_path)["runs"]
    rows: dict[str, dict] = {}
    labels: dict[str, dict[str, list[int]]] = {}
    for run in runs:
        path = _rows_file(results_path, run)
        if path.is_file():
            stored = json.loads(gzip.decompress(path.read_bytes()))
            if run["task"] not in labels:
                labels[run["task"]] = _task_labels(run["task"])
            stored["test_label"] = labels[run["task"]]["test_label"]
            if "member_scores" in stored:
                stored["member_scores"]["val_label"] = labels[run["task"]]["val_label"]
            rows[_run_key(run)] = stored
    return [{**run, **rows.get(_run_key(run), {})} for run in runs]


def load_record(results_path: Path) -> dict:
    """quality.json as stored: `runs` (summaries), `bootstrap` (CIs by task/variant) and `notes` (printed under
    quality.md's table)."""
    record = json.loads(results_path.read_text()) if results_path.is_file() else {}
    return {"runs": [], "bootstrap": {}, "notes": [], **record}


def save_runs(results_path: Path, runs: list[dict], bootstrap: dict | None = None) -> None:
    """Summaries to `results_path` (its `bootstrap` replaced when given, its notes kept); each run's per-row
    probabilities (labels left out) to its rows file, written byte-identically when unchanged (gzip without a
    timestamp)."""
    record = load_record(results_path)
    record["runs"] = [{k: v for k, v in r.items() if k not in ROW_KEYS} for r in runs]
    if bootstrap is not None:
        record["bootstrap"] = bootstrap
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(record))
    for run in runs:
        if "test_prob" not in run:
            continue
        stored = {"test_prob": run["test_prob"]}
        if run.get("member_scores"):
            stored["member_scores"] = {k: v for k, v in run["member_scores"].items() if k != "val_label"}
        path = _rows_file(results_path, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = gzip.compress(json.dumps(stored).encode(), mtime=0)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)


def _run_key(run: dict) -> str:
    return f"{run['task']}/{run['variant']}/{run['seed']}"


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def resamples(labels: np.ndarray, key: str):
    """The row indices of BOOTSTRAP resamples of the test rows (a generator seeded by `key`, so a group's CI is
    the same at every merge), less the draws that hold one class only (no ROC-AUC there)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() != labels[idx].max():
            yield idx


def bootstrap_cis(runs: list[dict], stored: dict, baseline: str = quality_render.BASELINE,
                  changed: set[str] | None = None) -> dict:
    """task/variant → the bootstrap 95% CI of the seed-mean test ROC-AUC and the paired CI of its difference to
    `baseline` (same resampled test rows for both; 1,000 resamples, a generator seeded by the key), for every group
    whose runs all have per-row scores. A `stored` entry is kept for a group without them while its seeds are
    still the group's (or, for an entry computed on fewer seeds, a subset of them: the table says which). With
    `changed` (the task/variant keys a merge brought), a stored entry of a group whose runs, baseline and seeds
    are unchanged is kept as it is (the generators are seeded by key: recomputing it would give it again)."""
    by_key: dict[str, list[dict]] = {}
    for run in runs:
        by_key.setdefault(f"{run['task']}/{run['variant']}", []).append(run)
    out = {}
    for key, group in sorted(by_key.items()):
        seeds = sorted(r["seed"] for r in group)
        if unchanged(key, [key, f"{key.split('/')[0]}/{baseline}"], seeds, stored, changed):
            out[key] = stored[key]
            continue
        if not all("test_prob" in r for r in group):
            if key in stored and set(stored[key]["seeds"]) <= set(seeds):
                out[key] = stored[key]
            continue
        group = sorted(group, key=lambda r: r["seed"])
        labels = np.array(group[0]["test_label"])
        probs = np.array([r["test_prob"] for r in group])  # seeds × N
        base = by_key.get(f"{group[0]['task']}/{baseline}")
        base_probs = (np.array([r["test_prob"] for r in base])
                      if base and all("test_prob" in r for r in base) and group[0]["variant"] != baseline else None)
        samples, diffs = [], []
        for idx in resamples(labels, key):
            value = np.mean([_auc(labels[idx], p[idx]) for p in probs])
            samples.append(value)
            if base_probs is not None:
                diffs.append(value - np.mean([_auc(labels[idx], p[idx]) for p in base_probs]))
        out[key] = {"seeds": seeds, "roc_auc_ci": [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))],
                    "diff_vs_baseline_ci": ([float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
                                            if diffs else None),
                    "source": f"{BOOTSTRAP} resamples of the test rows (quality_rows/)"}
    paired = paired_cis(by_key, stored, changed)
    out.update(paired)
    out.update({key: entry for key, entry in stored.items()  # a pair whose rows files are gone keeps its entry
                if "→" in key and key not in paired})
    return out


def unchanged(key: str, inputs: list[str], seeds: list[int], stored: dict, changed: set[str] | None) -> bool:
    """True when `stored[key]` still holds: none of the groups it was computed from (`inputs`) changed, on the same
    seeds."""
    return (changed is not None and key in stored and stored[key].get("seeds") == seeds
            and not any(group in changed for group in inputs))


def paired_cis(by_key: dict[str, list[dict]], stored: dict | None = None, changed: set[str] | None = None) -> dict:
    """"task/before→after" (each pair of `quality_render.PAIRED`) → the paired bootstrap 95% CIs of the seed-mean
    test ROC-AUC and PR-AUC difference after − before, over the seeds both ran with per-row scores (the same
    resampled test rows for both; 1,000 resamples, a generator seeded by the key)."""
    from sklearn.metrics import average_precision_score

    out = {}
    for before, after in quality_render.PAIRED:
        for task in sorted({key.split("/")[0] for key in by_key}):
            old = {r["seed"]: r for r in by_key.get(f"{task}/{before}", []) if "test_prob" in r}
            new = {r["seed"]: r for r in by_key.get(f"{task}/{after}", []) if "test_prob" in r}
            seeds = sorted(set(old) & set(new))
            if not seeds:
                continue
            key = f"{task}/{before}→{after}"
            if unchanged(key, [f"{task}/{before}", f"{task}/{after}"], seeds, stored or {}, changed):
                out[key] = stored[key]
                continue
            labels = np.array(old[seeds[0]]["test_label"])
            assert all(r[s]["test_label"] == old[seeds[0]]["test_label"] for r in (old, new) for s in seeds), (
                f"{key}: the runs were scored on different test rows")
            pairs = [(np.array(old[s]["test_prob"]), np.array(new[s]["test_prob"])) for s in seeds]
            roc, pr = [], []
            for idx in resamples(labels, key):
                roc.append(np.mean([_auc(labels[idx], b[idx]) - _auc(labels[idx], a[idx]) for a, b in pairs]))
                pr.append(np.mean([average_precision_score(labels[idx], b[idx])
                                   - average_precision_score(labels[idx], a[idx]) for a, b in pairs]))
            out[key] = {"seeds": seeds, "roc_auc_diff_ci": [float(np.percentile(roc, 2.5)), float(np.percentile(roc, 97.5))],
                        "pr_auc_diff_ci": [float(np.percentile(pr, 2.5)), float(np.percentile(pr, 97.5))],
                        "source": f"{BOOTSTRAP} paired resamples of the test rows (quality_rows/)"}
    return out


def render(results_path: Path) -> None:
    """Every table written from the stored JSON: quality.md, quality_finetuned_v1.md, quality_amx.md (the
    same-machine records), docs/benchmarks.md, README.md; a results file of another name renders its own .md only."""
    if results_path not in (RESULTS / "quality.json", RESULTS / f"{quality_render.SAME_MACHINE}.json"):
        (results_path.with_suffix(".md")).write_text(quality_render.render_quality(load_record(results_path)))
        return
    for path, text in quality_render.render_all().items():
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--variants", default="tfidf_lr,gbdt,frozen_gate,ensemble_frozen")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--max-train-rows", type=int, default=None, help="cap for fine-tuned variants only")
    parser.add_argument("--epochs", type=int, default=None, help="epochs for fine-tuned variants")
    parser.add_argument("--max-chunks", type=int, default=4)
    parser.add_argument("--chunk-tokens", type=int, default=128)
    parser.add_argument("--work", default="/tmp/bsmfusion-quality")
    parser.add_argument("--results", default=str(RESULTS / "quality.json"))
    parser.add_argument("--recombine", default=None,
                        help="comma-separated RECOMBINED variants: refit weights/calibration/threshold on the stored "
                             "member scores of their source variant (no training)")
    parser.add_argument("--merge", default=None,
                        help="only add the runs of other results JSONs (comma-separated; and their rows files), e.g. "
                             "written by a snapshot worktree with --results, replacing runs of the same task/variant/"
                             "seed; then the CIs the merged groups enter and every table")
    parser.add_argument("--render", action="store_true", help="only rewrite every table from the stored JSON")
    parser.add_argument("--bootstrap", action="store_true",
                        help="only recompute the stored bootstrap CIs from quality_rows/ (reads the tasks' labels)")
    args = parser.parse_args()
    results_path = Path(args.results).resolve()
    if args.render:
        return render(results_path)
    runs = load_runs(results_path)
    if args.merge:
        added = [run for path in args.merge.split(",") for run in load_runs(Path(path))]
        keys = {_run_key(r) for r in added}
        runs = [r for r in runs if _run_key(r) not in keys] + added
        print(f"merged {len(added)} run(s) from {args.merge}: {', '.join(sorted(keys))}")
        changed = {f"{r['task']}/{r['variant']}" for r in added}
        save_runs(results_path, runs, bootstrap_cis(runs, load_record(results_path)["bootstrap"], changed=changed))
        return render(results_path)
    if args.bootstrap:
        save_runs(results_path, runs, bootstrap_cis(runs, load_record(results_path)["bootstrap"]))
        return render(results_path)
    machine = f"{cpu_capability()}, precision {resolve_precision('auto').describe()}, 2 CPU cores"
    for task_name in args.tasks.split(","):
        task = TASKS[task_name]()
        jobs = ([(name, seed) for name in args.recombine.split(",") for seed in (int(s) for s in args.seeds.split(","))]
                if args.recombine else
                [(name, seed) for name in args.variants.split(",") for seed in (int(s) for s in args.seeds.split(","))])
        for name, seed in jobs:
            if args.recombine:
                source = stored_run(runs, task_name, RECOMBINED[name][0], seed)
                borrowed = borrowed_members(runs, source, name) if source else None
                if borrowed is None:
                    print(f"{task_name} {name} seed {seed}: skipped, a run it re-combines is not stored "
                          f"({RECOMBINED[name][0]}{' and ' + str(BORROWED[name]) if name in BORROWED else ''})")
                    continue
                run = recombine(task, source, name, args, borrowed)
            else:
                run = run_one(task, name, seed, args, Path(args.work))
                run["machine"] = machine
            runs = [r for r in runs if (r["task"], r["variant"], r["seed"]) != (task_name, name, seed)] + [run]
            print(json.dumps({k: v for k, v in run.items() if not k.startswith("test_") and k != "member_scores"}),
                  flush=True)
            save_runs(results_path, runs)
    save_runs(results_path, runs, bootstrap_cis(runs, load_record(results_path)["bootstrap"]))
    render(results_path)


if __name__ == "__main__":
    main()
