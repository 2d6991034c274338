"""Speed benchmark (issue 4): scoring and training throughput of the design's plain B×C×T path against the
packed, bucketed, bf16 and ONNX paths, in ONE run; each measurement in a fresh process for its peak memory.

    .venv/bin/python benchmarks/speed.py [--threads 256] [--out docs/performance.md]
    .venv/bin/python benchmarks/speed.py --explore bf16,predict --threads 64   # a quick look, nothing written
    .venv/bin/python benchmarks/speed.py --default BUNDLE [--task dnd_nodeal]  # a default (ensemble) bundle
    .venv/bin/python benchmarks/speed.py --render-default   # rewrite its table from the stored JSON

T=128, C=4, default encoder (MiniLM-L6), concat fusion. Texts: dnd_nodeal and cb_nosale test splits and the
long-thread set (consecutive test threads joined until each has ≥ 4·T tokens).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
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
    from bsmfusion.models.scores import score_table

    cfg, tokenizer, prep, frame = _setup(task_name, n)
    table = prep.encode(frame, with_labels=False)
    pad = int(tokenizer.pad_token_id or 0)
    if mode in ("predict", "predict_compiled"):  # end to end as `bsmfusion predict` runs: DataFrame in, table out
        import bsmfusion

        started = time.perf_counter()
        predictor = bsmfusion.load(bundle_dir, engine="auto", compile=mode == "predict_compiled")
        load_seconds = time.perf_counter() - started
        elapsed = _best_time(lambda: predictor.predict_frame(frame))
        collator = Collator(pad, C, T)
        queue.put({"threads_per_s": len(table) / elapsed, "seconds": elapsed,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "computed_tokens": _computed_tokens(table, collator, None, bucketed=True, batch=predictor.scorer.uncalibrated.batch_size),
                   "real_tokens": int(table.token_counts().sum()), "precision": predictor.describe_precision(),
                   "load_seconds": load_seconds})
        return
    if mode.startswith("onnx"):
        from bsmfusion.scoring.onnx_runtime import OnnxModel, onnx_file

        model = OnnxModel(onnx_file(Path(bundle_dir), "int8" if mode == "onnx_int8" else None), threads=2)
    else:
        from bsmfusion.bundle import load_bundle

        model = load_bundle(bundle_dir).model
        model.text_subnetwork.encode_mode = "plain" if mode == "plain" else "packed"
        if mode == "compiled":
            from bsmfusion.scoring.compiled import compile_backbone
            from bsmfusion.precision import resolve_precision

            print("compile", compile_backbone(model, resolve_precision("bf16"), torch.device("cpu")), flush=True)
    collator = Collator(pad, C, T, pad_to_max=(mode == "plain"))
    dataset = EncodedDataset(table)
    precision = "bf16" if mode in ("bf16", "compiled") else "fp32"

    def score() -> None:
        if mode in ("plain", "packed"):  # input order, no bucketing
            from bsmfusion.precision import resolve_precision

            with torch.inference_mode(), resolve_precision(precision).autocast("cpu"):
                for start in range(0, len(dataset), 32):
                    model(collator([dataset[i] for i in range(start, min(start + 32, len(dataset)))]))
        else:
            score_table(model, table, collator, batch_size=32, precision=precision)

    elapsed = _best_time(score)
    computed = _computed_tokens(table, collator, dataset, bucketed=mode not in ("plain", "packed"))
    queue.put({"threads_per_s": len(table) / elapsed, "seconds": elapsed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "computed_tokens": computed, "real_tokens": int(table.token_counts().sum())})


def _best_time(run, passes: int = 3) -> float:
    """Seconds of the fastest of `passes` timed calls after one warm-up call (oneDNN and ONNX Runtime set up
    their kernels on first use; the best of several passes keeps other load on a shared machine out)."""
    run()
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _computed_tokens(table, collator, dataset, bucketed: bool, batch: int = 32) -> int:
    """Tokens the encoder actually processes (padding included) with this path's batching."""
    from bsmfusion.data.sampling import sorted_batches

    batches = sorted_batches(table.token_counts(), batch) if bucketed else [list(range(s, min(s + batch, len(table)))) for s in range(0, len(table), batch)]
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


# Square matmuls and the encoder's own largest GEMMs (B·T = 16,384 rows through the FFN): the peak of a precision is
# the fastest of these — on AMX the FFN shapes beat the square ones.
PEAK_SHAPES = {"1024³": (1024, 1024, 1024), "2048³": (2048, 2048, 2048), "FFN up": (128 * T, 384, 1536),
               "FFN down": (128 * T, 1536, 384)}


def matmul_gflops(dtype_name: str, reps: int = 5) -> dict[str, float]:
    """GFLOP/s of PyTorch matmuls in a precision, 2 threads, per shape of `PEAK_SHAPES` (best of 3 timings)."""
    import torch

    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    out = {}
    for name, (m, k, n) in PEAK_SHAPES.items():
        a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
        seconds = _best_time(lambda: [a @ b for _ in range(reps)])
        out[name] = reps * 2 * m * k * n / seconds / 1e9
    return out


def _bare_worker(variant: str, queue) -> None:
    """The bare MiniLM forward (no chunking, pooling or head) on 128 chunks × T random tokens, GFLOP/s; `variant`
    is a precision, optionally with ` + --compile` (the TorchInductor backbone)."""
    import torch

    from bsmfusion.config import TextConfig
    from bsmfusion.models.backbone import build_backbone
    from bsmfusion.precision import resolve_precision

    torch.set_num_threads(2)
    backbone = build_backbone(TextConfig()).eval()
    precision = variant.split()[0]
    if variant.endswith("--compile"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        backbone = torch.compile(backbone, dynamic=True)
    ids = torch.randint(1000, 20000, (128, T))
    mask = torch.ones_like(ids)
    with torch.inference_mode(), resolve_precision(precision).autocast("cpu"):
        seconds = _best_time(lambda: backbone(input_ids=ids, attention_mask=mask))
    queue.put({"gflops": 128 * T * encoder_flops_per_token() / seconds / 1e9})


def int8_matmul_gflops(reps: int = 5) -> dict[str, float]:
    """The int8 peak of the engine that runs the int8 graph: ONNX Runtime's MatMulInteger (uint8 × int8 → int32,
    the kernel dynamic quantisation uses), per shape of `PEAK_SHAPES`, 2 threads; GOP/s counted as GFLOP/s."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    out = {}
    rng = np.random.default_rng(0)
    for name, (m, k, n) in PEAK_SHAPES.items():
        weight = numpy_helper.from_array(rng.integers(-127, 127, (k, n), dtype=np.int8), "B")
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_matmul",
                                  [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
                                  [helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])], initializer=[weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = {"A": rng.integers(0, 255, (m, k), dtype=np.uint8)}
        seconds = _best_time(lambda: [session.run(None, feed) for _ in range(reps)])
        out[name] = reps * 2 * m * k * n / seconds / 1e9
    return out


def cpu_flags() -> str:
    """The CPU's model name and its matrix-math flags from /proc/cpuinfo (Linux), for the record."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "fma")
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown (no /proc/cpuinfo)"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"{model}: {' '.join(f for f in wanted if f in flags)}"


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
          "compiled": "packed + bucketed + bf16 + `--compile` (TorchInductor backbone)",
          "onnx_fp32": "ONNX Runtime fp32 (bucketed)", "onnx_int8": "ONNX Runtime int8 (bucketed)",
          "predict": "end to end: `bsmfusion predict` defaults + `--engine auto` (tokenising included)",
          "predict_compiled": "end to end, as above + `--compile`"}
# the precision each path's matrix work runs in: its GFLOP/s is set against this machine's peak in that precision
PATH_PRECISION = {"plain": "fp32", "packed": "fp32", "bucketed": "fp32", "bf16": "bf16", "compiled": "bf16",
                  "onnx_fp32": "fp32", "onnx_int8": "int8"}


def _path_precision(mode: str, row: dict) -> str:
    if mode in PATH_PRECISION:
        return PATH_PRECISION[mode]
    described = row["precision"]  # e.g. "auto → bf16: AMX; engine auto → torch: ..." or "ONNX int8; ..."
    return next(p for p in ("int8", "bf16", "fp32") if p in described.split(";")[0])


def render_markdown(results: dict) -> str:
    flops = encoder_flops_per_token()
    peaks = {p: max(shapes.values()) for p, shapes in results["peaks"].items()}
    lines = ["### Scoring throughput (threads/s; ratio to the plain path; peak RSS of the scoring process)", "",
             "The last column sets the encoder's achieved GFLOP/s against this machine's measured matmul peak in the "
             "precision the path computes in (\"This machine\" below).", ""]
    for task, rows in results["scoring"].items():
        plain = rows["plain"]["threads_per_s"]
        lines += [f"#### {task} ({'joined threads ≥ 4·T tokens' if task == 'long' else 'test split'})", "",
                  "| path | threads/s | × plain | peak RSS MB | tokens computed / real | encoder GFLOP/s | % of matmul peak (precision) |",
                  "|---|---|---|---|---|---|---|"]
        for mode, r in rows.items():
            gflops = r["computed_tokens"] * flops / r["seconds"] / 1e9
            precision = _path_precision(mode, r)
            share = f"{100 * gflops / peaks[precision]:.0f}% ({precision})" if peaks.get(precision) else f"– ({precision})"
            lines.append(f"| {LABELS[mode]} | {r['threads_per_s']:.1f} | {r['threads_per_s'] / plain:.2f}× | "
                         f"{r['peak_rss_mb']:.0f} | {r['computed_tokens'] / r['real_tokens']:.2f} | {gflops:.1f} | {share} |")
        lines.append("")
    lines += ["### Training throughput (forward + backward + AdamW step, batch 16, MiniLM-L6, concat)", "",
              "| task | plain samples/s | optimised samples/s | × plain | plain peak RSS MB | optimised peak RSS MB |", "|---|---|---|---|---|---|"]
    for task, r in results["training"].items():
        lines.append(f"| {task} | {r['plain']['samples_per_s']:.2f} | {r['optimised']['samples_per_s']:.2f} | "
                     f"{r['optimised']['samples_per_s'] / r['plain']['samples_per_s']:.2f}× | {r['plain']['peak_rss_mb']:.0f} | {r['optimised']['peak_rss_mb']:.0f} |")
    if "batch_dependence" in results:
        b = results["batch_dependence"]
        lines += ["", f"### Batch dependence ({b['bundle']}; 128 dnd_nodeal test rows scored alone vs in batches of 64)", "",
                  "| precision | max abs Δ prob | max abs Δ log-odds |", "|---|---|---|"]
        lines += [f"| {p} | {b[p]['max_abs_prob']:.2e} | {b[p]['max_abs_log_odds']:.2e} |" for p in ("fp32", "bf16")]
    lines += ["", "### This machine", "",
              f"- CPU capability (torch's checks): {results.get('cpu_capability', 'unknown')}; `precision: auto` → "
              f"{results.get('auto_precision', 'unknown')}.",
              *[f"- Matmul {p} ({'ONNX Runtime MatMulInteger, GOP/s' if p == 'int8' else 'PyTorch'}, 2 threads): "
                + ", ".join(f"{name} {v:.0f}" for name, v in shapes.items()) + f" GFLOP/s; the peak used above: {peaks[p]:.0f}."
                for p, shapes in results["peaks"].items()],
              f"- `--engine auto` here: {results.get('auto_engine', 'unknown')}.",
              *[f"- Loading the {task} bundle for `predict` (compile included): "
                + f"eager {rows['predict']['load_seconds']:.1f} s, with --compile {rows['predict_compiled']['load_seconds']:.1f} s."
                for task, rows in results["scoring"].items() if "predict_compiled" in rows],
              *[f"- Bare MiniLM forward, {p} (128 chunks × {T} tokens, no chunking/pooling/head): {b['gflops']:.0f} GFLOP/s = "
                f"{100 * b['gflops'] / peaks[p.split()[0]]:.0f}% of the {p.split()[0]} peak."
                for p, b in results.get("bare_forward", {}).items()],
              f"- CPU flags: {results.get('cpu_flags', 'unknown')}.",
              f"- Encoder cost counted as {flops / 1e6:.1f} MFLOP per token (6 layers × 2 × (4·d² + 2·d·ffn + 2·T·d), d = 384, ffn = 1536, T = 128)."]
    if "quality" in results:
        q = results["quality"]
        lines += ["", "### Score agreement on dnd_nodeal (trained concat bundle, test split)", "",
                  "| engine | ROC-AUC | max abs Δ prob vs PyTorch fp32 |", "|---|---|---|",
                  f"| PyTorch fp32 | {q['torch_fp32']:.4f} | 0 |",
                  f"| PyTorch bf16 autocast | {q['torch_bf16']:.4f} | {q['max_abs_prob_diff_torch_bf16']:.2e} |",
                  f"| ONNX Runtime fp32 | {q['onnx_fp32']:.4f} | {q['max_abs_prob_diff_onnx_fp32']:.2e} |",
                  f"| ONNX Runtime int8 | {q['onnx_int8']:.4f} | {q['max_abs_prob_diff_onnx_int8']:.2e} |"]
    return "\n".join(lines) + "\n"


def _bench_bundle(task_name: str, folder: Path) -> Path:
    """An untrained concat bundle for the task (scoring cost does not depend on the weights), with its ONNX graphs."""
    from bsmfusion.bundle import write_bundle
    from bsmfusion.inference.onnx_export import export_onnx
    from bsmfusion.models.classifier import build_model

    cfg, tokenizer, prep, _ = _setup(task_name, 1)
    prep.label_names = ["0", "1"]
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities).eval()
    bundle = folder / task_name
    write_bundle(bundle, cfg=cfg, preprocessor=prep, tokenizer=tokenizer, model=model, threshold=0.5, metrics={})
    export_onnx(bundle, quantize="int8")
    return bundle


def explore(threads: int, modes: list[str]) -> None:
    """Quick look while optimising: the given scoring paths on the three text sets, threads/s and % of peak."""
    shapes = {"fp32": matmul_gflops("float32"), "bf16": matmul_gflops("bfloat16"), "int8": int8_matmul_gflops()}
    print("matmul GFLOP/s", json.dumps({p: {k: round(v) for k, v in d.items()} for p, d in shapes.items()}), flush=True)
    peaks = {p: max(d.values()) for p, d in shapes.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in ("dnd_nodeal", "cb_nosale", "long"):
            bundle = _bench_bundle(task_name, Path(tmp))
            n = threads if task_name != "long" else max(8, threads // 2)
            for mode in modes:
                r = _run(_score_worker, task_name, n, mode, str(bundle))
                precision = _path_precision(mode, r)
                gflops = r["computed_tokens"] * encoder_flops_per_token() / r["seconds"] / 1e9
                print(f"{task_name:10s} {mode:9s} {r['threads_per_s']:7.1f} threads/s {gflops:7.1f} GFLOP/s "
                      f"{100 * gflops / peaks[precision]:4.0f}% of {precision} peak", flush=True)


DEFAULT_MARK, DEFAULT_END = "<!-- speed.py default -->", "<!-- end speed.py default -->"


def _default_worker(bundle: str, task_name: str, engine: str, passes: int, queue) -> None:
    """In a fresh process: the default bundle scored end to end (`Predictor.predict_frame`, as `bsmfusion predict`
    does) against each member's own scorer (its own parsing, tokenising and model) on the whole test split."""
    import torch

    import bsmfusion
    from bsmfusion.scoring.options import ScoringOptions
    from bsmfusion.scoring.scorers import member_scorer
    from tasks import TASKS

    torch.set_num_threads(2)
    frame = TASKS[task_name]().test
    options = ScoringOptions(engine=engine)
    predictor = bsmfusion.load(bundle, options)
    members = {m.name: member_scorer(m.bundle, options) for m in predictor.bundle.model.members if m.weight > 0}
    predictor.predict_frame(frame.iloc[:64])  # warm: the first batch pays one-time setup
    for scorer in members.values():
        scorer.score_frame(frame.iloc[:64])
    seconds = {"ensemble": _best_time(lambda: predictor.predict_frame(frame), passes)}
    for name, scorer in members.items():
        seconds[name] = _best_time(lambda scorer=scorer: scorer.score_frame(frame), passes)
    queue.put({"rows": len(frame), "seconds": seconds, "precision": predictor.describe_precision(),
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def default_speed(bundle: Path, task_name: str, engines: list[str], passes: int) -> dict:
    """Rows/s of the default bundle end to end and of each member alone; the bound the members set is
    1 / Σ_member (1 / rows/s): what scoring them one after the other costs, with nothing shared and nothing added."""
    from bsmfusion.precision import cpu_capability

    meta = json.loads((bundle / "meta.json").read_text())
    runs = {}
    for engine in engines:
        r = _run(_default_worker, str(bundle), task_name, engine, passes)
        member_seconds = {k: v for k, v in r["seconds"].items() if k != "ensemble"}
        bound = r["rows"] / sum(member_seconds.values())
        runs[engine] = {**r, "rows_per_s": {k: r["rows"] / v for k, v in r["seconds"].items()},
                        "bound_rows_per_s": bound, "ratio_to_bound": r["rows"] / r["seconds"]["ensemble"] / bound}
        print(engine, json.dumps(runs[engine]), flush=True)
    return {"command": " ".join(["python", *sys.argv]), "task": task_name, "bundle": bundle.name,
            "members": [m["name"] for m in meta["members"] if m["weight"] > 0], "cpu_capability": cpu_capability(),
            "cores": 2, "passes": passes, "runs": runs}


def render_default(results: dict) -> str:
    lines = [f"Command: `{results['command']}`", "",
             f"The default bundle ({' + '.join(results['members'])}; trained on {results['task']}'s training split) "
             f"scoring {results['task']}'s whole test split ({next(iter(results['runs'].values()))['rows']:,} rows): end to end (`Predictor.predict_frame`, what `bsmfusion "
             f"predict` runs) against each member's own scorer (its own parsing, tokenising and model). Bound: the "
             f"members one after the other, 1 / Σ (1 / member rows/s). Best of {results['passes']} passes, "
             f"CPU: {results['cpu_capability']}, {results['cores']} cores.", "",
             "| engine | neural members compute in | " + " | ".join(f"{m} rows/s" for m in results["members"])
             + " | bound rows/s | default bundle rows/s | × bound |",
             "|---|---|" + "---|" * len(results["members"]) + "---|---|---|"]
    for engine, r in results["runs"].items():
        members = " | ".join(f"{r['rows_per_s'][m]:.1f}" for m in results["members"])
        neural = re.search(r"neural ×[\d.]+: ([^;(]+)", r["precision"])  # the first neural member's precision
        lines.append(f"| {engine} | {neural.group(1).strip() if neural else r['precision']} | {members} | {r['bound_rows_per_s']:.1f} | "
                     f"{r['rows_per_s']['ensemble']:.1f} | {r['ratio_to_bound']:.2f}× |")
    worst = min(r["ratio_to_bound"] for r in results["runs"].values())
    lines += ["", "- The classical members compute in float64 NumPy whatever the engine; `auto` picks per neural member "
              "(`scoring.scorers.choose_engine`). Above 1.0×: the neural members share one tokenising pass.",
              f"- Target (issue 23): ≥ 0.8× the bound — {worst:.2f}× at worst ({'met' if worst >= 0.8 else 'missed'})."]
    return "\n".join(lines) + "\n"


def write_default(results_path: Path, out: Path) -> str:
    table = render_default(json.loads(results_path.read_text()))
    text = out.read_text() if out.is_file() else "# Performance\n"
    if DEFAULT_MARK not in text:
        text = text.rstrip("\n") + f"\n\n## Scoring speed of the default bundle\n\n{DEFAULT_MARK}\n{DEFAULT_END}\n"
    header, rest = text.split(DEFAULT_MARK, 1)
    footer = rest.split(DEFAULT_END, 1)[1] if DEFAULT_END in rest else "\n"
    out.write_text(f"{header}{DEFAULT_MARK}\n{table}{DEFAULT_END}{footer}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=256, help="threads scored per task")
    parser.add_argument("--trained-dnd", default="/tmp/bsmfusion-quality/dnd_nodeal_concat",
                        help="a trained dnd_nodeal bundle for the bf16/int8 quality checks")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--explore", metavar="MODES", help="comma-separated scoring paths only (e.g. bf16,predict), "
                        f"printed, nothing written; paths: {', '.join(LABELS)}")
    parser.add_argument("--default", metavar="BUNDLE", help="measure a default (ensemble) bundle end to end against "
                        "its members' own scoring (benchmarks/default_bundle.py trains one); writes "
                        "benchmarks/results/speed_default.json and its table in --out")
    parser.add_argument("--task", default="dnd_nodeal", help="with --default: the task whose test split is scored")
    parser.add_argument("--engines", default="torch", help="with --default: comma-separated engines (torch, onnx, auto)")
    parser.add_argument("--passes", type=int, default=2, help="with --default: timed passes (the best counts)")
    parser.add_argument("--render-default", action="store_true", help="rewrite --out's default-bundle table from JSON")
    args = parser.parse_args()
    if args.explore:
        return explore(args.threads, args.explore.split(","))
    default_json = ROOT / "benchmarks" / "results" / "speed_default.json"
    if args.default:
        results = default_speed(Path(args.default), args.task, args.engines.split(","), args.passes)
        default_json.write_text(json.dumps(results, indent=2))
    if args.default or args.render_default:
        return print(write_default(default_json, Path(args.out)))
    results: dict = {"command": " ".join(["python", *sys.argv]), "scoring": {}, "training": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in ("dnd_nodeal", "cb_nosale", "long"):
            bundle = _bench_bundle(task_name, Path(tmp))
            n = args.threads if task_name != "long" else max(8, args.threads // 2)
            rows = {}
            for mode in LABELS:
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
    results["peaks"] = {"fp32": matmul_gflops("float32"), "bf16": matmul_gflops("bfloat16"), "int8": int8_matmul_gflops()}
    results["cpu_flags"] = cpu_flags()
    results["bare_forward"] = {v: _run(_bare_worker, v) for v in ("fp32", "bf16", "bf16 + --compile")}
    results["auto_engine"] = results["scoring"]["dnd_nodeal"]["predict"]["precision"]
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
