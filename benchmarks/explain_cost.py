"""What explaining a row costs: seconds of `Predictor.explain(level="rows")` (both games) over seconds of
`predict_proba` on the same rows, chunk cache on.

    .venv/bin/python benchmarks/explain_cost.py --model /tmp/bench/small_validation/dnd_nodeal_0 --task dnd_nodeal \
        [--rows 200] [--cache-mb 256] [--method auto] [--label default]
    .venv/bin/python benchmarks/explain_cost.py --render

Protocol. The bundle is loaded once (read only) with `chunk_cache_mb`; a warm-up scores and explains 8 rows that
are not measured (lazy loading, first-call allocations). The first `--rows` test rows are taken in blocks of
`--block`; for each block, twice, alternating: the cache is cleared and `predict_proba` scores the block, the
cache is cleared and `explain(level="rows")` explains it. The best of the 2 timings is kept per block and call
(the 2 cores are shared, so the best is the least disturbed; alternating block by block lets a busy spell slow
both calls alike), and the ratio is Σ best explain / Σ best predict. Both start from an empty cache: explaining a
row includes scoring it. Also recorded: messages and tabular columns per row, the scored copies per row of each
game (coalitions other than the full and empty one, per member; a gbdt member scores each feature copy once per
background row on top), the chunk cache's hit rate and chunks encoded per row in each call, and the share of the
explain time spent in each game (`explain.attribution._play`, timed in the second round).
Writes benchmarks/results/explain_cost.json (one record a task × label, replaced when re-measured), renders
explain_cost.md from it and fills the table between the markers in docs/explain.md (`--render`: from the JSON).
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
JSON_PATH, MD_PATH = RESULTS / "explain_cost.json", RESULTS / "explain_cost.md"
DOC = ROOT / "docs" / "explain.md"
MARK, END = "<!-- explain_cost.py -->", "<!-- end explain_cost.py -->"
WARMUP_ROWS = 8


def copies_per_row(predictor, frame, options) -> dict:
    """Mean players and scored copies per row of each game (coalitions other than N and ∅), and the methods used."""
    from bsmfusion.explain.players import row_messages, tabular_players
    from bsmfusion.explain.shapley import plan

    def inner(n):
        p = plan(n, options.exact_max, options.permutations, np.random.default_rng(0), options.method)
        counts = p.masks.sum(axis=1)
        return int(((counts > 0) & (counts < n)).sum()), p.method

    messages = [len(m) for m in row_messages(frame, predictor.cfg)]
    columns = len(tabular_players(predictor.cfg))
    played = [inner(n) for n in messages]
    methods: dict[str, int] = {}
    for _, method in played:
        methods[method] = methods.get(method, 0) + 1
    return {"messages_per_row": float(np.mean(messages)), "max_messages": int(max(messages)),
            "message_copies_per_row": float(np.mean([c for c, _ in played])), "message_methods": methods,
            "columns": columns, "feature_copies_per_row": inner(columns)[0], "feature_method": inner(columns)[1]}


def timed(call):
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def game_timer():
    """Patch `_play` to add up its seconds per game (1st call of a member: messages, 2nd: features)."""
    from bsmfusion.explain import attribution

    original, spent, calls = attribution._play, {"messages": 0.0, "features": 0.0}, [0]

    def play(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent["messages" if calls[0] % 2 == 0 else "features"] += time.perf_counter() - started
            calls[0] += 1

    return attribution, original, play, spent


def run(model: Path, task_name: str, rows: int, block: int, cache_mb: float, method: str, label: str) -> dict:
    import bsmfusion
    from bsmfusion.explain.attribution import ExplainOptions
    from bsmfusion.precision import cpu_capability

    task = TASKS[task_name]()
    frame = task.test.head(rows).reset_index(drop=True)
    warm = task.test.iloc[rows:rows + WARMUP_ROWS].reset_index(drop=True)
    predictor = bsmfusion.load(model, chunk_cache_mb=cache_mb)
    cache = predictor.chunk_cache
    options = ExplainOptions(method=method)
    predictor.predict_proba(warm)
    predictor.explain(warm, level="rows", options=options)
    attribution, original, patched, spent = game_timer()
    predict, explain = [[], []], [[], []]  # seconds per round and block
    counts = {"predict": np.zeros(3), "explain": np.zeros(3)}  # lookups, hits, chunks encoded: second round

    def count(name: str) -> None:
        stats = cache.stats()
        counts[name] += [stats["lookups"], stats["hits"], stats["encoded"]]

    for start in range(0, rows, block):
        part = frame.iloc[start:start + block]
        for repeat in range(2):
            cache.clear(), cache.reset_stats()
            predict[repeat].append(timed(lambda: predictor.predict_proba(part)))
            if repeat == 1:
                count("predict")
            cache.clear(), cache.reset_stats()
            attribution._play = patched if repeat == 1 else original
            try:
                explain[repeat].append(timed(lambda: predictor.explain(part, level="rows", options=options)))
            finally:
                attribution._play = original
            if repeat == 1:
                count("explain")
    best_predict, best_explain = np.min(predict, axis=0), np.min(explain, axis=0)
    second = float(np.sum(explain[1]))
    return {"task": task_name, "label": label, "model": describe_model(predictor), "bundle": str(model),
            "rows": rows, "block": block, "chunk_cache_mb": cache_mb, "method": method, "machine": cpu_capability(),
            "precision": predictor.describe_precision(),
            "predict_seconds": [round(float(np.sum(t)), 3) for t in predict],
            "explain_seconds": [round(float(np.sum(t)), 3) for t in explain],
            "best_predict_seconds": round(float(best_predict.sum()), 3),
            "best_explain_seconds": round(float(best_explain.sum()), 3),
            "ratio": round(float(best_explain.sum() / best_predict.sum()), 3),
            "block_ratios": [round(float(e / p), 2) for e, p in zip(best_explain, best_predict)],
            **copies_per_row(predictor, frame, options),
            **{f"{name}_cache": {"hit_rate": round(float(c[1] / max(c[0], 1)), 4),
                                 "encoded_per_row": round(float(c[2] / rows), 3)} for name, c in counts.items()},
            "game_share": {k: round(v / second, 3) for k, v in spent.items()}}


def describe_model(predictor) -> str:
    cfg = predictor.cfg
    if cfg.model.fusion == "ensemble":
        return f"default ensemble ({', '.join(cfg.model.ensemble.member_names)})"
    return f"{cfg.model.fusion} ({cfg.text.encoder})"


def render(records: list[dict]) -> str:
    lines = ["| task | model | rows | messages / row | copies / row (messages + features) | method | predict s | "
             "explain s | explain / predict | cache hit rate (explain) | machine |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in sorted(records, key=lambda r: (r["task"], r["label"])):
        methods = ", ".join(f"{m} {c}" for m, c in sorted(r["message_methods"].items()))
        lines.append(
            f"| {r['task']} | {r['model']} | {r['rows']} | {r['messages_per_row']:.1f} (max {r['max_messages']}) | "
            f"{r['message_copies_per_row']:.1f} + {r['feature_copies_per_row']} | messages: {methods} rows; "
            f"{r['columns']} columns: {r['feature_method']} | {r['best_predict_seconds']:.1f} | "
            f"{r['best_explain_seconds']:.1f} | **{r['ratio']:.1f}×** | {r['explain_cache']['hit_rate']:.2f} | "
            f"{r['machine']} |")
    return "\n".join(lines) + "\n"


def render_markdown(records: list[dict]) -> str:
    protocol = __doc__.split("Protocol. ", 1)[1].split("\nWrites", 1)[0].replace("\n", " ")
    notes = [f"- {r['task']} / {r['label']}: bundle `{r['bundle']}`, chunk cache {r['chunk_cache_mb']:g} MB, "
             f"{r['precision']}; blocks of {r['block']} rows; seconds per round predict {r['predict_seconds']}, "
             f"explain {r['explain_seconds']}; ratio per block {r['block_ratios']}; share of explain time in the games "
             f"{r['game_share']}; chunk cache predict {r['predict_cache']}, explain {r['explain_cache']}"
             for r in sorted(records, key=lambda r: (r["task"], r["label"]))]
    return "\n".join(["# What explaining a row costs", "",
                      "Generated by `benchmarks/explain_cost.py --render` from explain_cost.json; do not edit.", "",
                      render(records), "Protocol: " + protocol, "", *notes]) + "\n"


def fill_doc(records: list[dict]) -> None:
    text = DOC.read_text()
    start, end = text.index(MARK) + len(MARK), text.index(END)
    DOC.write_text(text[:start] + "\n" + render(records) + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--task", default="dnd_nodeal", choices=sorted(TASKS))
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--block", type=int, default=50, help="rows per alternating predict / explain timing")
    parser.add_argument("--cache-mb", type=float, default=256)
    parser.add_argument("--method", default="auto", choices=("auto", "shapley", "occlusion"))
    parser.add_argument("--label", default="default", help="names the record (one per task × label)")
    parser.add_argument("--render", action="store_true", help="rewrite explain_cost.md and the doc's table only")
    args = parser.parse_args()
    records = json.loads(JSON_PATH.read_text()) if JSON_PATH.is_file() else []
    if not args.render:
        if args.model is None:
            parser.error("--model is required unless --render")
        new = run(args.model, args.task, args.rows, args.block, args.cache_mb, args.method, args.label)
        records = [r for r in records if (r["task"], r["label"]) != (args.task, args.label)] + [new]
        JSON_PATH.write_text(json.dumps(records, indent=1) + "\n")
        print(json.dumps(new, indent=1), flush=True)
    MD_PATH.write_text(render_markdown(records))
    fill_doc(records)
    print(render(records))


if __name__ == "__main__":
    main()
