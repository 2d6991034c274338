"""Speed benchmark (issue 4): scoring and training throughput of the design's plain B×C×T path against the
packed, bucketed, bf16 and ONNX paths, in ONE run; each measurement in a fresh process for its peak memory.

    .venv/bin/python benchmarks/speed.py [--threads 256] [--out docs/performance.md]

T=128, C=4, default encoder (MiniLM-L6), concat fusion. Texts: dnd_nodeal and cb_nosale test splits and the
long-thread set (consecutive test threads joined until each has ≥ 4·T tokens).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
T, C = 128, 4
TRAIN_STEPS, TRAIN_BATCH = 6, 16


def _setup(task_name: str, n: int):
    import torch

    from bsmfusion.config import config_from_dict
    from bsmfusion.data.preprocess import RowPreprocessor
    from bsmfusion.data.text import load_tokenizer, tokenizer_source
    from tasks import TASKS, long_threads

    torch.set_num_threads(2)
    base = "dnd_nodeal" if task_name == "long" else task_name
    task = TASKS[base]()
    cfg = config_from_dict(task.config("concat", text={"max_chunks": C, "chunk_tokens": T}))
    tokenizer = load_tokenizer(tokenizer_source(cfg.text))
    prep = RowPreprocessor.fit(cfg, tokenizer, task.train)
    frame = task.test
    if task_name == "long":
        texts = long_threads(frame, cfg.data.text[0], tokenizer, 4 * T)
        frame = frame.iloc[: len(texts)].copy()
        frame[cfg.data.text[0]] = texts
    frame = frame.iloc[:n].reset_index(drop=True)
    return cfg, tokenizer, prep, frame


def _score_worker(task_name: str, n: int, mode: str, bundle_dir: str, queue) -> None:
    import torch

    from bsmfusion.data.dataset import Collator, EncodedDataset
    from bsmfusion.inference.scoring import score_table

    cfg, tokenizer, prep, frame = _setup(task_name, n)
    table = prep.encode(frame, with_labels=False)
    pad = int(tokenizer.pad_token_id or 0)
    if mode.startswith("onnx"):
        from bsmfusion.inference.onnx_export import OnnxModel, onnx_file

        model = OnnxModel(onnx_file(Path(bundle_dir), "int8" if mode == "onnx_int8" else None), threads=2)
    else:
        from bsmfusion.bundle import load_bundle

        model = load_bundle(bundle_dir).model
        model.text_subnetwork.encode_mode = "plain" if mode == "plain" else "packed"
    collator = Collator(pad, C, T, pad_to_max=(mode == "plain"))
    dataset = EncodedDataset(table)
    precision = "bf16" if mode == "bf16" else "fp32"
    started = time.perf_counter()
    if mode in ("plain", "packed"):  # input order, no bucketing
        from bsmfusion.precision import resolve_precision

        with torch.inference_mode(), resolve_precision(precision).autocast("cpu"):
            for start in range(0, len(dataset), 32):
                model(collator([dataset[i] for i in range(start, min(start + 32, len(dataset)))]))
        computed = _computed_tokens(table, collator, dataset, bucketed=False)
    else:
        score_table(model, table, collator, batch_size=32, precision=precision)
        computed = _computed_tokens(table, collator, dataset, bucketed=True)
    elapsed = time.perf_counter() - started
    queue.put({"threads_per_s": len(table) / elapsed, "seconds": elapsed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "computed_tokens": computed, "real_tokens": int(table.token_counts().sum())})


def _computed_tokens(table, collator, dataset, bucketed: bool) -> int:
    """Tokens the encoder actually processes (padding included) with this path's batching."""
    from bsmfusion.data.sampling import sorted_batches

    batches = sorted_batches(table.token_counts(), 32) if bucketed else [list(range(s, min(s + 32, len(table)))) for s in range(0, len(table), 32)]
    total = 0
    for rows in batches:
        if collator.pad_to_max:
            total += len(rows) * C * T
        else:  # packed: real chunks × longest real chunk in the batch
            chunks = [c for i in rows for c in table.threads[i].chunks]
            total += len(chunks) * max(len(c) for c in chunks)
    return total


def _train_worker(task_name: str, mode: str, queue) -> None:
    import torch

    from bsmfusion.data.dataset import Collator, EncodedDataset
    from bsmfusion.data.preprocess import RowPreprocessor
    from bsmfusion.data.sampling import BucketBatchSampler
    from bsmfusion.models.classifier import build_model
    from bsmfusion.training.optim import parameter_groups

    cfg, tokenizer, prep, _ = _setup(task_name, 1)
    from tasks import TASKS

    frame = TASKS[task_name]().train.iloc[: TRAIN_STEPS * TRAIN_BATCH * 4].reset_index(drop=True)
    table = prep.encode(frame)
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities).train()
    model.text_subnetwork.encode_mode = "plain" if mode == "plain" else "packed"
    collator = Collator(int(tokenizer.pad_token_id or 0), C, T, pad_to_max=(mode == "plain"))
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.train))
    dataset = EncodedDataset(table)
    if mode == "plain":
        order = np.random.default_rng(0).permutation(len(table))
        batches = [order[i:i + TRAIN_BATCH].tolist() for i in range(0, len(order), TRAIN_BATCH)]
    else:
        batches = list(BucketBatchSampler(table.token_counts(), TRAIN_BATCH, seed=0))
    batches = batches[:TRAIN_STEPS + 1]
    samples, started = 0, None
    for step, rows in enumerate(batches):
        if step == 1:
            started = time.perf_counter()  # step 0 warms up
        batch = collator([dataset[i] for i in rows])
        loss = model.loss(model(batch), batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:
            samples += len(rows)
    elapsed = time.perf_counter() - started
    queue.put({"samples_per_s": samples / elapsed, "seconds": elapsed,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _run(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def matmul_gflops(dtype_name: str, size: int = 1024, reps: int = 10) -> float:
    import torch

    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(reps):
        a @ b
    return reps * 2 * size ** 3 / (time.perf_counter() - started) / 1e9


def encoder_flops_per_token(hidden=384, layers=6, ffn=1536, avg_len=128) -> float:
    """Multiply-adds ×2 per token: Q,K,V,O projections (4·d²), the FFN (2·d·ffn), attention scores and mix (2·L·d)."""
    return layers * 2 * (4 * hidden * hidden + 2 * hidden * ffn + 2 * avg_len * hidden)


def quality_checks(bundle_dir: Path) -> dict:
    """ROC-AUC of a trained dnd_nodeal bundle: PyTorch fp32 vs bf16 vs ONNX int8 (and max prob differences)."""
    import bsmfusion
    from bsmfusion.evaluation.metrics import classification_metrics
    from bsmfusion.inference.onnx_export import export_onnx
    from tasks import TASKS

    test = TASKS["dnd_nodeal"]().test
    export_onnx(bundle_dir, quantize="int8")
    out = {}
    probs = {}
    for name, kwargs in {"torch_fp32": {"precision": "fp32"}, "torch_bf16": {"precision": "bf16"},
                         "onnx_fp32": {"engine": "onnx"}, "onnx_int8": {"engine": "onnx", "quantized": True}}.items():
        predictor = bsmfusion.load(bundle_dir, **kwargs)
        scores = predictor.score_frame(test)
        labels = predictor.bundle.preprocessor.encode_labels(test)
        probs[name] = scores.probs[:, 1]
        out[name] = classification_metrics(labels, scores.probs, predictor.threshold)["roc_auc"]
    for name in ("torch_bf16", "onnx_fp32", "onnx_int8"):
        out[f"max_abs_prob_diff_{name}"] = float(np.abs(probs[name] - probs["torch_fp32"]).max())
    return out


def batch_dependence(bundle_dir: Path, n: int = 128) -> dict:
    """How much a row's score moves with its batch: the same dnd_nodeal test rows scored one at a time and in
    length-sorted batches of 64, in fp32 and in bf16 (max |Δ prob| and max |Δ log-odds|)."""
    import bsmfusion
    from tasks import TASKS

    test = TASKS["dnd_nodeal"]().test.iloc[:n].reset_index(drop=True)
    out = {}
    for precision in ("fp32", "bf16"):
        single = bsmfusion.load(bundle_dir, precision=precision, batch_size=1).score_frame(test).probs[:, 1].astype(np.float64)
        batched = bsmfusion.load(bundle_dir, precision=precision, batch_size=64).score_frame(test).probs[:, 1].astype(np.float64)
        logit = lambda p: np.log(np.clip(p, 1e-7, 1 - 1e-7)) - np.log1p(-np.clip(p, 1e-7, 1 - 1e-7))  # noqa: E731
        out[precision] = {"max_abs_prob": float(np.abs(single - batched).max()),
                          "max_abs_log_odds": float(np.abs(logit(single) - logit(batched)).max())}
    return out


LABELS = {"plain": "plain design path (B×C×T fp32, padded to C=4·T=128)", "packed": "packed (real chunks, T_dyn)",
          "bucketed": "packed + length-bucketed", "bf16": "packed + bucketed + bf16 autocast",
          "onnx_fp32": "ONNX Runtime fp32 (bucketed)", "onnx_int8": "ONNX Runtime int8 (bucketed)"}


def render_markdown(results: dict) -> str:
    flops = encoder_flops_per_token()
    peak = results["gflops"]["fp32_matmul"]
    lines = ["## Scoring throughput (threads/s; ratio to the plain path; peak RSS of the scoring process)", ""]
    for task, rows in results["scoring"].items():
        plain = rows["plain"]["threads_per_s"]
        lines += [f"### {task} ({'joined threads ≥ 4·T tokens' if task == 'long' else 'test split'})", "",
                  "| path | threads/s | × plain | peak RSS MB | tokens computed / real | encoder GFLOP/s | % of fp32 matmul peak |",
                  "|---|---|---|---|---|---|---|"]
        for mode, r in rows.items():
            gflops = r["computed_tokens"] * flops / r["seconds"] / 1e9
            lines.append(f"| {LABELS[mode]} | {r['threads_per_s']:.1f} | {r['threads_per_s'] / plain:.2f}× | "
                         f"{r['peak_rss_mb']:.0f} | {r['computed_tokens'] / r['real_tokens']:.2f} | {gflops:.1f} | {100 * gflops / peak:.0f}% |")
        lines.append("")
    lines += ["## Training throughput (forward + backward + AdamW step, batch 16, MiniLM-L6, concat)", "",
              "| task | plain samples/s | optimised samples/s | × plain | plain peak RSS MB | optimised peak RSS MB |", "|---|---|---|---|---|---|"]
    for task, r in results["training"].items():
        lines.append(f"| {task} | {r['plain']['samples_per_s']:.2f} | {r['optimised']['samples_per_s']:.2f} | "
                     f"{r['optimised']['samples_per_s'] / r['plain']['samples_per_s']:.2f}× | {r['plain']['peak_rss_mb']:.0f} | {r['optimised']['peak_rss_mb']:.0f} |")
    g = results["gflops"]
    if "batch_dependence" in results:
        b = results["batch_dependence"]
        lines += ["", f"## Batch dependence ({b['bundle']}; 128 dnd_nodeal test rows scored alone vs in batches of 64)", "",
                  "| precision | max abs Δ prob | max abs Δ log-odds |", "|---|---|---|"]
        lines += [f"| {p} | {b[p]['max_abs_prob']:.2e} | {b[p]['max_abs_log_odds']:.2e} |" for p in ("fp32", "bf16")]
    lines += ["", "## This machine", "",
              f"- CPU capability (torch's checks): {results.get('cpu_capability', 'unknown')}; `precision: auto` → "
              f"{results.get('auto_precision', 'unknown')}.",
              f"- float32 matmul (1024², 2 threads): {g['fp32_matmul']:.1f} GFLOP/s; bfloat16: {g['bf16_matmul']:.1f} GFLOP/s.",
              f"- Encoder cost counted as {flops / 1e6:.1f} MFLOP per token (6 layers × 2 × (4·d² + 2·d·ffn + 2·T·d), d = 384, ffn = 1536, T = 128)."]
    if "quality" in results:
        q = results["quality"]
        lines += ["", "## Score agreement on dnd_nodeal (trained concat bundle, test split)", "",
                  "| engine | ROC-AUC | max abs Δ prob vs PyTorch fp32 |", "|---|---|---|",
                  f"| PyTorch fp32 | {q['torch_fp32']:.4f} | 0 |",
                  f"| PyTorch bf16 autocast | {q['torch_bf16']:.4f} | {q['max_abs_prob_diff_torch_bf16']:.2e} |",
                  f"| ONNX Runtime fp32 | {q['onnx_fp32']:.4f} | {q['max_abs_prob_diff_onnx_fp32']:.2e} |",
                  f"| ONNX Runtime int8 | {q['onnx_int8']:.4f} | {q['max_abs_prob_diff_onnx_int8']:.2e} |"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=256, help="threads scored per task")
    parser.add_argument("--trained-dnd", default="/tmp/bsmfusion-quality/dnd_nodeal_concat",
                        help="a trained dnd_nodeal bundle for the bf16/int8 quality checks")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args()
    results: dict = {"command": " ".join(["python", *sys.argv]), "scoring": {}, "training": {}}
    with tempfile.TemporaryDirectory() as tmp:
        from bsmfusion.bundle import write_bundle
        from bsmfusion.inference.onnx_export import export_onnx
        from bsmfusion.models.classifier import build_model

        for task_name in ("dnd_nodeal", "cb_nosale", "long"):
            cfg, tokenizer, prep, _ = _setup(task_name, 1)
            prep.label_names = ["0", "1"]
            model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities).eval()
            bundle = Path(tmp) / task_name
            write_bundle(bundle, cfg=cfg, preprocessor=prep, tokenizer=tokenizer, model=model, threshold=0.5, metrics={})
            export_onnx(bundle, quantize="int8")
            n = args.threads if task_name != "long" else max(8, args.threads // 2)
            rows = {}
            for mode in ("plain", "packed", "bucketed", "bf16", "onnx_fp32", "onnx_int8"):
                rows[mode] = _run(_score_worker, task_name, n, mode, str(bundle))
                print(task_name, mode, json.dumps(rows[mode]), flush=True)
            results["scoring"][task_name] = rows
        for task_name in ("dnd_nodeal", "cb_nosale"):
            results["training"][task_name] = {mode: _run(_train_worker, task_name, mode) for mode in ("plain", "optimised")}
            print(task_name, "training", json.dumps(results["training"][task_name]), flush=True)
        trained = Path(args.trained_dnd).is_dir()
        results["batch_dependence"] = {
            **batch_dependence(Path(args.trained_dnd) if trained else Path(tmp) / "dnd_nodeal"),
            "bundle": "trained concat bundle" if trained else "untrained concat model, random head"}
        print("batch dependence", json.dumps(results["batch_dependence"]), flush=True)
    from bsmfusion.precision import cpu_capability, resolve_precision

    results["cpu_capability"] = cpu_capability()
    results["auto_precision"] = resolve_precision("auto").describe()
    results["gflops"] = {"fp32_matmul": matmul_gflops("float32"), "bf16_matmul": matmul_gflops("bfloat16")}
    if Path(args.trained_dnd).is_dir():
        results["quality"] = quality_checks(Path(args.trained_dnd))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "speed.json").write_text(json.dumps(results, indent=2))
    table = render_markdown(results)
    text = out.read_text() if out.is_file() else "# Performance\n\n<!-- speed.py -->\n<!-- end speed.py -->\n"
    header, rest = text.split("<!-- speed.py -->", 1)
    footer = rest.split("<!-- end speed.py -->", 1)[1] if "<!-- end speed.py -->" in rest else "\n"
    out.write_text(f"{header}<!-- speed.py -->\nCommand: `{results['command']}`\n\n{table}<!-- end speed.py -->{footer}")
    print(table)


if __name__ == "__main__":
    main()
