"""Decisions when the validation split is small: the default ensemble's combination (member weights, calibration,
threshold) fitted on 60 validation rows — on those rows alone (`combine_on: validation`) or with the training rows
every member scored out of sample (`combine_on: cross_fit`) — scored once on the test split.

    .venv/bin/python benchmarks/small_validation.py --tasks cb_nosale --seeds 0,1,2 [--draws 5] [--rows 60] \
        [--work /tmp/bench/small_validation]
    .venv/bin/python benchmarks/small_validation.py --render

Protocol. For each task and seed the default is trained once (`combine_on: cross_fit`, the full validation split;
the bundle is kept in --work and reused). No member chooses anything on the validation rows (the neural members
early-stop on their shared holdout, tfidf_lr and gbdt choose by CV on the training rows), so the members do not
depend on them, and the combination can be re-fitted on any subset by the library's own `fit_combination`:
`--draws` seeded draws of `--rows` validation rows (both classes present), each combined both ways, plus the full
validation split both ways. The out-of-sample training rows are re-derived: the holdout mask from the seed, the
neural members score it, tfidf_lr and gbdt are refitted with the same seed for their out-of-fold logits; the
rows must be training's: the same labels, and the bundle's weights and calibration give its stored probabilities
(checked, else it stops).
Both protocols share the members (trained with the shared holdout), so the difference is the combination alone.
`--leave-out NAME` also re-fits every combination without that member (a bundle trained with an optional
member gives the default's result too: its other members are the default's, bit for bit, and so is the
combination code; the record names the members trained). A bundle of today's default trained elsewhere (e.g. quality.py's `ensemble_first_steps`, the same config) can be
linked in as `--work/TASK_SEED`: it is reused (its training time is then not this script's to report).
Writes benchmarks/results/small_validation.json (one record a task × seed × protocol × draw) and renders
small_validation.md from it (`--render`: from the JSON alone).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import TASKS  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
JSON_PATH, MD_PATH = RESULTS / "small_validation.json", RESULTS / "small_validation.md"
PROTOCOLS = ("validation", "cross_fit")


def take(scores, rows):
    from bsmfusion.models.scores import Scores

    return Scores(scores.probs[rows], scores.text_contribution[rows], scores.tab_contribution[rows],
                  scores.baseline_score[rows])


def members_out_of_sample(bundle, cfg, task):
    """Per member: logits of the shared holdout rows (neural: scored by the member; classical: its out-of-fold
    logits from a refit with the same seed), and the holdout's labels."""
    from bsmfusion.bundle import load_bundle
    from bsmfusion.classical.train import fit_member, prepare
    from bsmfusion.ensemble.selection import member_logits
    from bsmfusion.ensemble.train import holdout_mask, member_config
    from bsmfusion.scoring.scorers import build_scorer

    k = cfg.model.num_classes
    mask = holdout_mask(task.train, cfg, cfg.train.seed)
    held = task.train[mask].reset_index(drop=True)
    out = {}
    for name in cfg.model.ensemble.member_names:
        member = load_bundle(bundle.path / "members" / name)
        if name in cfg.model.ensemble.neural_member_names:
            out[name] = member_logits(build_scorer(member).score_frame(held), k)
        else:
            member_cfg = member_config(cfg, name)
            model, _ = fit_member(member_cfg, prepare(member_cfg, task.train, task.val))
            out[name] = model.out_of_fold[mask]
    return out, bundle.preprocessor.encode_labels(held)


def check_rows(bundle, cfg, names, val_scores, y_val, holdout, y_hold, task_name, seed) -> None:
    """The re-derived combination rows are training's: their labels equal the bundle's validation_scores.json
    labels, and the bundle's own weights and calibration applied to their member logits give its stored
    probabilities (so a re-fit here starts from what training saw, whichever selection code trained the bundle)."""
    from bsmfusion.calibration import bundle_calibration
    from bsmfusion.ensemble.cross_fit import logit_scores
    from bsmfusion.ensemble.selection import member_logits, weighted_sum

    stored = json.loads((bundle.path / "validation_scores.json").read_text())
    logits = [np.vstack([member_logits(s, cfg.model.num_classes), holdout[n]]) for s, n in zip(val_scores, names)]
    labels = np.concatenate([y_val, y_hold]).tolist()
    weights = [bundle.meta["weights"][n] for n in names]
    probs = bundle_calibration(bundle).apply(logit_scores(weighted_sum(logits, weights))).probs[:, 1]
    gap = float(np.max(np.abs(probs - np.asarray(stored["probability"])))) if labels == stored["label"] else np.inf
    if gap > 1e-4:
        raise SystemExit(f"{task_name} seed {seed}: the re-derived combination rows are not training's (largest "
                         f"probability difference {gap:.2g}, or the labels differ)")


def bagged_f1_threshold(labels: np.ndarray, probs: np.ndarray, draws: int = 200) -> float:
    """Candidate rule: the median of the max-F1 thresholds of `draws` bootstrap resamples of the rows, bagging the
    unstable arg-max of a few rows' F1 curve. Every call draws the same resamples (seed 0); a one-class resample
    counts as 0.5 (`best_f1_threshold`'s answer; about never at these tasks' 30–50% positives and ≥ 60 rows, not
    so with rare positives); with an even count the median may fall between two scores."""
    from bsmfusion.evaluation.metrics import best_f1_threshold

    rng = np.random.default_rng(0)
    picks = (rng.integers(0, len(labels), len(labels)) for _ in range(draws))
    return float(np.median([best_f1_threshold(labels[i], probs[i]) for i in picks]))


def shrunk_f1_threshold(labels: np.ndarray, probs: np.ndarray, prior_rows: float) -> float:
    """Candidate rule between max_f1 and expected_f1: F1 counted on soft labels λ·y + (1 − λ)·p, λ = n / (n +
    prior_rows), n the rows: few rows lean on the calibrated probabilities (expected_f1), many on the labels. With
    prior_rows 0 it reaches max_f1's F1 (of tied thresholds it keeps the highest, max_f1 the lowest); with
    endless prior rows it is expected_f1."""
    from bsmfusion.decision import soft_f1_threshold

    labels, probs = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    share = len(labels) / (len(labels) + prior_rows)
    return soft_f1_threshold(probs, share * labels + (1 - share) * probs)


# the threshold rules compared on each re-fit: the library's two, and candidates measured before any becomes a policy
RULES = ("max_f1", "expected_f1", "bagged_f1", "shrunk_f1_100", "shrunk_f1_400")


def rule_thresholds(labels: np.ndarray, probs: np.ndarray, max_f1: float) -> dict[str, float]:
    """Each rule's threshold on the combination rows' labels and calibrated P(positive)."""
    from bsmfusion.decision import expected_f1_threshold

    return {"max_f1": max_f1, "expected_f1": expected_f1_threshold(probs),
            "bagged_f1": bagged_f1_threshold(labels, probs),
            "shrunk_f1_100": shrunk_f1_threshold(labels, probs, 100),
            "shrunk_f1_400": shrunk_f1_threshold(labels, probs, 400)}


def suffix(rule: str) -> str:
    """The record keys' suffix of a rule's results (max_f1's keys have none: the records before the candidates)."""
    return "" if rule == "max_f1" else f"_{rule}"


def evaluate(cfg, names, val_scores, y_val, rows_val, holdout, y_hold, test_scores, y_test, protocol):
    """One re-fit of the combination on validation rows `rows_val` (and, cross_fit, the holdout), scored on the
    test split and on the validation rows outside the draw ("rest": rows no choice saw, for choosing between the
    decision rules without the test split), under each threshold rule of `RULES`."""
    from bsmfusion.ensemble.cross_fit import CombinationRows, fit_combination, pool
    from bsmfusion.ensemble.selection import combine, member_logits
    from bsmfusion.evaluation.metrics import best_f1_threshold, classification_metrics

    k = cfg.model.num_classes
    val = [take(s, rows_val) for s in val_scores]
    logits = [member_logits(s, k) for s in val]
    if protocol == "cross_fit":
        rows = pool(logits, y_val[rows_val], [holdout[n] for n in names], y_hold, names,
                    "the neural members' shared holdout, the classical members' out-of-fold scores")
    else:
        rows = CombinationRows(logits, y_val[rows_val], len(rows_val))
    fitted = fit_combination(cfg, rows, val, y_val[rows_val], names)
    thresholds = rule_thresholds(fitted.decided.labels, fitted.decided.scores.probs[:, 1], fitted.decided.threshold)
    rest = np.setdiff1d(np.arange(len(y_val)), rows_val)

    def calibrated(member_scores, subset=None):
        parts = member_scores if subset is None else [take(s, subset) for s in member_scores]
        return fitted.decided.calibration.apply(combine(list(zip(fitted.weights, parts)), k)[1]).probs

    probs = calibrated(test_scores)
    best = classification_metrics(y_test, probs, best_f1_threshold(y_test, probs[:, 1]))
    out = {"protocol": protocol, "val_rows": int(len(rows_val)), "combination_rows": int(len(rows.labels)),
           "weights": dict(zip(names, np.round(fitted.weights, 6).tolist())), "threshold": thresholds["max_f1"],
           "test_f1_optimal": best["f1"]}
    scored_rest = len(rest) and len(np.unique(y_val[rest])) == 2
    if scored_rest:
        rest_probs = calibrated(val_scores, rest)
        rest_best = classification_metrics(y_val[rest], rest_probs, best_f1_threshold(y_val[rest], rest_probs[:, 1]))
        out["rest_rows"] = int(len(rest))
    for rule, threshold in thresholds.items():
        chosen, key = classification_metrics(y_test, probs, threshold), suffix(rule)
        out.update({f"threshold{key}": threshold, f"test_roc_auc{key}": chosen["roc_auc"],
                    f"test_pr_auc{key}": chosen["pr_auc"], f"test_ece{key}": chosen["ece"], f"test_f1{key}": chosen["f1"]})
        if scored_rest:
            out[f"rest_f1_gap{key}"] = rest_best["f1"] - classification_metrics(y_val[rest], rest_probs, threshold)["f1"]
    return out


def run(task_name: str, seed: int, draws: int, n_rows: int, work: Path, leave_out: str | None = None) -> list[dict]:
    import bsmfusion  # noqa: F401
    from bsmfusion.bundle import load_bundle
    from bsmfusion.config import config_from_dict
    from bsmfusion.precision import cpu_capability
    from bsmfusion.scoring.scorers import build_scorer
    from bsmfusion.workflows.train import train

    task = TASKS[task_name]()
    out = work / f"{task_name}_{seed}"
    timing = work / f"{task_name}_{seed}.fit_seconds"  # kept beside the bundle, so a rerun that reuses it keeps it
    if not (out / "meta.json").is_file():
        cfg = config_from_dict(task.config("ensemble", train={"seed": seed}), source=f"{task_name} default")
        started = time.perf_counter()
        train(cfg, task.train, task.val, out, progress=False)
        timing.write_text(f"{time.perf_counter() - started:.1f}\n")
    fit_seconds = float(timing.read_text()) if timing.is_file() else None
    bundle = load_bundle(out)
    cfg = bundle.cfg
    names = cfg.model.ensemble.member_names
    members = {n: load_bundle(out / "members" / n) for n in names}
    val_scores = [build_scorer(members[n]).score_frame(task.val) for n in names]
    test_scores = [build_scorer(members[n]).score_frame(task.test) for n in names]
    y_val, y_test = (bundle.preprocessor.encode_labels(f) for f in (task.val, task.test))
    holdout, y_hold = members_out_of_sample(bundle, cfg, task)
    check_rows(bundle, cfg, names, val_scores, y_val, holdout, y_hold, task_name, seed)
    settings = cfg.model.ensemble
    member_sets = [names] + ([[n for n in names if n != leave_out]] if leave_out in names else [])
    records = []
    for subset in member_sets:  # the bundle's members, then (--leave-out) the same members but one
        pick = [names.index(n) for n in subset]
        sub_val, sub_test = [val_scores[i] for i in pick], [test_scores[i] for i in pick]
        classical = [m for m in settings.members if m != "neural" and m in subset]
        common = {"task": task_name, "seed": seed, "machine": cpu_capability(), "fit_seconds": fit_seconds,
                  "model": f"{settings.neural_seeds} neural (epochs: {settings.neural_epochs}) + {' + '.join(classical)}"
                           + gbdt_reads(cfg),
                  "holdout_rows": int(len(y_hold)),
                  **({"members_trained": names} if subset != names else {})}
        everything = np.arange(len(y_val))
        for protocol in PROTOCOLS:
            records.append({**common, "draw": None, **evaluate(cfg, subset, sub_val, y_val, everything, holdout,
                                                               y_hold, sub_test, y_test, protocol)})
        for draw in range(draws):
            rng = np.random.default_rng(1000 * seed + draw)
            while True:
                rows = np.sort(rng.choice(len(y_val), n_rows, replace=False))
                if len(np.unique(y_val[rows])) == 2:
                    break
            for protocol in PROTOCOLS:
                records.append({**common, "draw": draw, **evaluate(cfg, subset, sub_val, y_val, rows, holdout, y_hold,
                                                                   sub_test, y_test, protocol)})
    return records


def gbdt_reads(cfg) -> str:
    """How gbdt read the text and the quoted numbers, where the bundle's config says other than the first
    bundles (svd, off): records of before and after that change must not group together."""
    classical = cfg.model.classical
    if (classical.gbdt_text, classical.quoted_numbers) == ("svd", "off"):
        return ""
    return f" (gbdt text: {classical.gbdt_text}, quoted numbers: {classical.quoted_numbers})"


# the model of the records written before the record named the members' settings: the default as of stop 29
STOP29_MODEL = "default ensemble (2 fine-tuned MiniLM members + tfidf_lr + gbdt), combine_on re-fitted"
MODEL_LABELS = {STOP29_MODEL: "2 neural (epochs: own) + tfidf_lr + gbdt"}


def model_label(record: dict) -> str:
    """The model a record measured: its members' settings, and for a re-fit without a member of the trained
    bundle (--leave-out) which one was left out; the records group and are replaced by it."""
    label = MODEL_LABELS.get(record["model"], record["model"])
    left_out = [m for m in record.get("members_trained", []) if m not in record["weights"]]
    return label + (f" ({', '.join(left_out)} left out of its bundle)" if left_out else "")


def record_key(record: dict) -> tuple:
    """What a new run replaces: the records of its task, seed, model and CPU kind (bf16 on AMX and fp32 on AVX2
    train different members, so one kind's run does not overwrite the other's)."""
    return record["task"], record["seed"], model_label(record), record["machine"]


def summarise(records: list[dict]) -> list[dict]:
    """Per task × model × CPU kind × protocol × (full split | small draws): means and sds over seeds (and draws)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        split = "full" if r["draw"] is None else f"{r['val_rows']} rows"
        groups.setdefault((r["task"], model_label(r), r["machine"], r["protocol"], split), []).append(r)
    rows = []
    for (task, model, _, protocol, split), group in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][4] != "full", kv[0][3])):
        def stat(key):
            values = np.array([r[key] for r in group], dtype=float)
            return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rules = {}  # per threshold rule every record of the group has: test F1 gap (mean, worst), rest gap mean
        for rule in RULES:
            if all(f"test_f1{suffix(rule)}" in r for r in group):
                gap = np.array([r["test_f1_optimal"] - r[f"test_f1{suffix(rule)}"] for r in group])
                rest = [r[f"rest_f1_gap{suffix(rule)}"] for r in group if r.get(f"rest_f1_gap{suffix(rule)}") is not None]
                rules[rule] = {"gap": (float(gap.mean()), float(gap.max())), "rest": float(np.mean(rest)) if rest else None}
        rows.append({"task": task, "model": model, "protocol": protocol, "validation": split, "runs": len(group),
                     "rules": rules, "seeds": sorted({r["seed"] for r in group}),
                     "machine": sorted({r["machine"] for r in group}),
                     "combination_rows": stat("combination_rows")[0], "roc_auc": stat("test_roc_auc"),
                     "pr_auc": stat("test_pr_auc"), "ece": stat("test_ece"), "f1": stat("test_f1")})
    return rows




def render(records: list[dict]) -> str:
    lines = ["# The default ensemble's combination on a small validation split", "",
             "Generated by `benchmarks/small_validation.py --render` from small_validation.json; do not edit. "
             "Protocol: the script's docstring (members trained once per seed on the full training split; the "
             "combination — weights, calibration, threshold — re-fitted on the rows named; test scored once per "
             "re-fit). Mean ± sd over seeds × draws; F1 gap: test-optimal threshold's F1 − the chosen threshold's "
             "(mean, worst), for the max_f1 threshold and for expected_f1's (the same fitted combination). "
             "Rest gap: the same F1 gap on the validation rows outside the draw (rows no choice saw; what chooses "
             "between the two rules without the test split). Model: the default's members; 'epochs: own' is the "
             "default as of stop 29 (each neural member early-stops on its holdout), 'epochs: first' today's "
             "(neural_2 stops where the first member scored best).", "",
             "| task | model | validation rows | combine_on | fitted on (rows) | seeds | runs | test ROC-AUC | test PR-AUC | test ECE | "
             "test F1 (max_f1) | F1 gap max_f1 | F1 gap expected_f1 | rest gap max_f1 / expected_f1 | machine |",
             "|---|---|---|---|---:|---|---:|---|---|---|---|---|---|---|---|"]

    def rest(rules, rule):
        return "" if rule not in rules or rules[rule]["rest"] is None else f"{rules[rule]['rest']:.3f}"

    def gap(rules, rule):
        return f"{rules[rule]['gap'][0]:.3f}, {rules[rule]['gap'][1]:.3f}" if rule in rules else ""
    summaries = summarise(records)
    for s in summaries:
        lines.append(f"| {s['task']} | {s['model']} | {s['validation']} | {s['protocol']} | {s['combination_rows']:.0f} | "
                     f"{','.join(map(str, s['seeds']))} | {s['runs']} | {s['roc_auc'][0]:.4f} ± {s['roc_auc'][1]:.4f} | "
                     f"{s['pr_auc'][0]:.4f} ± {s['pr_auc'][1]:.4f} | "
                     f"{s['ece'][0]:.3f} ± {s['ece'][1]:.3f} | {s['f1'][0]:.3f} ± {s['f1'][1]:.3f} | "
                     f"{gap(s['rules'], 'max_f1')} | {gap(s['rules'], 'expected_f1')} | "
                     f"{rest(s['rules'], 'max_f1')} / {rest(s['rules'], 'expected_f1')} | {'; '.join(s['machine'])} |")
    candidates = [s for s in summaries if len(s["rules"]) > 2]
    if candidates:
        lines += ["", "Threshold rules on the same re-fits (records that carry the candidates): test F1 gap (mean, "
                  "worst) and, after '/', the rest gap (mean; validation rows outside the draw, the rows to choose a "
                  "rule on). bagged_f1: the median of 200 bootstrap resamples' max-F1 thresholds; shrunk_f1_N: F1 on "
                  "the soft labels λ·y + (1 − λ)·p, λ = n / (n + N), n the combination rows ('fitted on (rows)' "
                  "above; the script's docstrings). None of them is a `train.decision` policy.", "",
                  "| task | model | validation rows | combine_on | runs | " + " | ".join(RULES) + " |",
                  "|---|---|---|---|---:|" + "---|" * len(RULES)]
        for s in candidates:
            cells = [gap(s["rules"], r) + (f" / {rest(s['rules'], r)}" if rest(s["rules"], r) else "") for r in RULES]
            lines.append(f"| {s['task']} | {s['model']} | {s['validation']} | "
                         f"{s['protocol']} | {s['runs']} | " + " | ".join(cells) + " |")
    fits = sorted({(r["task"], r["seed"], r["fit_seconds"], r["machine"]) for r in records if r["fit_seconds"]})
    if fits:
        lines += ["", "Wall time of the default's training in this script (`combine_on: cross_fit`; the 2 cores were "
                  "shared with other work, so this is not a training-speed measurement): " +
                  "; ".join(f"{t} seed {s}: {sec:.0f} s ({m})" for t, s, sec, m in fits) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="cb_nosale")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench/small_validation"))
    parser.add_argument("--leave-out", default=None,
                        help="a member of the bundle (e.g. catboost) whose combination is re-fitted without it too: "
                             "the same members but one, bit for bit what training without it would have combined")
    parser.add_argument("--render", action="store_true", help="rewrite small_validation.md from the JSON only")
    args = parser.parse_args()
    records = json.loads(JSON_PATH.read_text()) if JSON_PATH.is_file() else []
    if not args.render:
        for task in args.tasks.split(","):
            for seed in map(int, args.seeds.split(",")):
                new = run(task, seed, args.draws, args.rows, args.work, args.leave_out)
                keys = {record_key(r) for r in new}
                records = [r for r in records if record_key(r) not in keys] + new
                JSON_PATH.write_text(json.dumps(records, indent=1) + "\n")
                print(render([r for r in records if r["task"] == task]), flush=True)
    MD_PATH.write_text(render(records))


if __name__ == "__main__":
    main()
