"""The GPU check (issue 10, item 4), run by `benchmarks/gpu.sh` on a machine with a CUDA GPU; ≤ 370 s there.

Stages, each in its own process with its own time limit, so one failure or hang never loses the others' numbers:

  env      torch/CUDA versions, the GPU, `precision auto` on CUDA, the measured bf16 matmul peak (8192³)
  speed    scoring threads/s of a bert-base-sized encoder (random weights from a config: same cost as the
           design's BERT, no download), T=128, C=4, long threads (over C·T tokens) and short ones: the design's
           plain B×C×T path vs the packed path (real chunks only), bf16 autocast and fp32; encoder GFLOP/s and
           model FLOPs utilisation (MFU) against the measured and the nominal bf16 peak
  train    training samples/s (bf16 autocast, packed, length-bucketed batches of 32; forward+backward+AdamW)
           and its MFU (3× the forward FLOPs)
  bundles  `bsmfusion train` through the CLI with train.strategy=ddp and =fsdp on ONE device (bf16 mixed
           precision), same seed and data: both bundles load and score the same test rows; ROC-AUC of each and the
           largest |ΔP| between them
  predict  `bsmfusion predict --device cuda` end to end (tokenisation included), rows/s
  ray      `bsmfusion predict --ray --ray-actors 1 --ray-gpus-per-actor 1` against the local CUDA predict (fp32:
           same ids, max |ΔP|); skipped with the reason when ray cannot be imported there

    python3 benchmarks/gpu_check.py --out "$OUT"          # all stages; gpu_check.json + gpu_check.md in --out
    python3 benchmarks/gpu_check.py --stage speed --out /tmp/x
    BSM_GPU_CHECK_SMOKE=1 .venv/bin/python benchmarks/gpu_check.py --out /tmp/x   # logic only: CPU, tiny BERT

Data: synthetic planted-signal threads (`tests/synthetic.py`), so nothing is read from shared/ or downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.synthetic
T, C = 128, 4
BERT_BASE = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
             "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}
NOMINAL_BF16_TFLOPS = {"H200": 989, "H100": 989, "GH200": 989, "A100": 312, "L40S": 362, "L40": 181, "L4": 121,
                       "A10": 125, "A6000": 155, "4090": 165}  # dense bf16 from the vendors' datasheets
SMOKE = os.environ.get("BSM_GPU_CHECK_SMOKE") == "1"  # CPU, a 2-layer BERT, few rows: checks the code, not the GPU
DEVICE = "cpu" if SMOKE else "cuda"
if SMOKE:
    BERT_BASE = {**BERT_BASE, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 64}
SCALE = 16 if SMOKE else 1  # rows divided by this
# seconds per stage; gpu.sh caps the whole run at 370 s, and each stage's results are saved as soon as it ends
STAGE_LIMITS = {"env": 45, "speed": 75, "train": 50, "bundles": 130, "predict": 70, "ray": 80}


def config(**train) -> dict:
    return {"data": {"text": "dialogue", "numeric": ["price", "ratio"], "categorical": ["category"], "label": "label",
                     "id": "id"},
            "text": {"encoder": "minilm", "encoder_config": BERT_BASE, "max_chunks": C, "chunk_tokens": T},
            "model": {"fusion": "gate"},
            "train": {"epochs": 1, "batch_size": 32, "seed": 0, "precision": "bf16", **train}}


def frames(n: int, seed: int, long: bool = False):
    """Planted-signal threads; `long`: each row joins 28 threads (over C·T tokens: C chunks, head + tail kept)."""
    import numpy as np

    from tests.synthetic import planted_frame

    frame = planted_frame(n, "text", seed)
    if long:
        pool = planted_frame(n * 28, "tab", seed + 100)["dialogue"].to_numpy()
        rng = np.random.default_rng(seed)
        frame["dialogue"] = [" <eos> ".join([d, *rng.choice(pool, 27)]) for d in frame["dialogue"]]
    return frame


def encoder_flops_per_token(hidden=768, layers=12, ffn=3072, seq=T) -> float:
    """Multiply-adds ×2 per token: Q,K,V,O projections (4·d²), the FFN (2·d·ffn), attention scores and mix (2·L·d)."""
    return layers * 2 * (4 * hidden * hidden + 2 * hidden * ffn + 2 * seq * hidden)


def nominal_peak(name: str) -> float | None:
    for key, value in NOMINAL_BF16_TFLOPS.items():
        if key in name:
            return float(value)
    return None


def cuda_time(fn, reps: int) -> float:
    """Seconds per call, CUDA-synchronised, after one warm-up call."""
    import torch

    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    fn()
    sync()
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return (time.perf_counter() - started) / reps


# ------------------------------------------------------------------------------------------------ stages
def stage_env(work: Path) -> dict:
    import torch

    from bsmfusion.precision import resolve_precision

    assert SMOKE or torch.cuda.is_available(), "torch sees no CUDA device"
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke)"
    size = 8192 if DEVICE == "cuda" else 256
    a = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=DEVICE, dtype=torch.bfloat16)
    seconds = cuda_time(lambda: a @ b, 10)
    return {"gpu": name, "capability": list(torch.cuda.get_device_capability(0)) if DEVICE == "cuda" else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
            "precision_auto": resolve_precision("auto", DEVICE).describe(),
            "bf16_matmul_tflops": 2 * size ** 3 / seconds / 1e12, "nominal_bf16_tflops": nominal_peak(name)}


def _model_and_tables(n_long: int, n_short: int):
    import torch

    from bsmfusion.config import config_from_dict
    from bsmfusion.data.preprocess import RowPreprocessor
    from bsmfusion.data.text import load_tokenizer, tokenizer_source
    from bsmfusion.models.classifier import build_model

    cfg = config_from_dict(config())
    tokenizer = load_tokenizer(tokenizer_source(cfg.text))
    train = frames(256, 0)
    prep = RowPreprocessor.fit(cfg, tokenizer, train)
    torch.manual_seed(0)
    model = build_model(cfg, prep.tabular.numeric_dim, prep.tabular.cardinalities)
    tables = {"long": prep.encode(frames(n_long, 1, long=True), with_labels=False),
              "short": prep.encode(frames(n_short, 2), with_labels=False)}
    return cfg, tokenizer, prep, model, tables


def _computed_tokens(table, batch_size: int, plain: bool) -> int:
    """Tokens the encoder processes, padding included: plain B×C×T, packed real chunks × the batch's longest."""
    from bsmfusion.data.sampling import sorted_batches

    total = 0
    for rows in sorted_batches(table.token_counts(), batch_size):
        if plain:
            total += len(rows) * C * T
        else:
            chunks = [len(c) for i in rows for c in table.threads[i].chunks]
            total += len(chunks) * max(chunks)
    return total


def stage_speed(work: Path, peak: float | None) -> dict:
    import torch

    from bsmfusion.data.dataset import Collator
    from bsmfusion.models.scores import score_table

    cfg, tokenizer, prep, model, tables = _model_and_tables(1024 // SCALE, 2048 // SCALE)
    model = model.to(DEVICE).eval()
    flops = encoder_flops_per_token()
    rows = []
    for task, table in tables.items():
        for path in ("plain", "packed"):
            for precision in ("bf16", "fp32"):
                if path == "plain" and precision == "fp32" and task == "short":
                    continue
                model.text_subnetwork.encode_mode = path
                collator = Collator(int(tokenizer.pad_token_id or 0), C, T, pad_to_max=(path == "plain"))
                seconds = cuda_time(lambda: score_table(model, table, collator, batch_size=64, device=DEVICE,
                                                        precision=precision), 2)
                computed = _computed_tokens(table, 64, path == "plain")
                tflops = computed * flops / seconds / 1e12
                rows.append({"threads": task, "path": path, "precision": precision, "rows": len(table),
                             "threads_per_s": len(table) / seconds, "encoder_tflops": tflops,
                             "mfu_measured_peak": tflops / peak if peak else None,
                             "tokens_computed_per_real": computed / int(table.token_counts().sum())})
    return {"scoring": rows, "encoder_flops_per_token": flops}


def stage_train(work: Path, peak: float | None) -> dict:
    import numpy as np
    import torch

    from bsmfusion.data.dataset import Collator, EncodedDataset
    from bsmfusion.data.sampling import BucketBatchSampler
    from bsmfusion.precision import resolve_precision
    from bsmfusion.training.optim import parameter_groups

    cfg, tokenizer, prep, model, _ = _model_and_tables(1, 1)
    frame = frames(32 * 24 // SCALE, 3, long=True)
    table = prep.encode(frame)
    model = model.to(DEVICE).train()
    model.text_subnetwork.encode_mode = "packed"
    collator = Collator(int(tokenizer.pad_token_id or 0), C, T)
    dataset = EncodedDataset(table)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.train), fused=DEVICE == "cuda")
    batches = list(BucketBatchSampler(table.token_counts(), 32, seed=0))[:21]
    autocast = resolve_precision("bf16", DEVICE).autocast(DEVICE)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    samples, tokens, started = 0, 0, None
    for step, rows in enumerate(batches):
        if step == 1:
            sync()
            started = time.perf_counter()  # step 0 warms up
        batch = collator([dataset[i] for i in rows]).to(DEVICE)
        with autocast:
            loss = model.loss(model(batch), batch.labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            samples += len(rows)
            tokens += int(batch.chunk_mask.sum()) * int(batch.input_ids.shape[-1])
    sync()
    seconds = time.perf_counter() - started
    tflops = 3 * tokens * encoder_flops_per_token() / seconds / 1e12
    return {"samples_per_s": samples / seconds, "steps": len(batches) - 1, "batch": 32, "train_tflops": tflops,
            "mfu_measured_peak": tflops / peak if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if DEVICE == "cuda" else None, "loss_last": float(loss),
            "finite": bool(np.isfinite(float(loss)))}


def _cli(*argv: str, timeout: float) -> tuple[float, str]:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "bsmfusion", *argv], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    if run.returncode != 0:
        raise RuntimeError(f"bsmfusion {' '.join(argv[:1])} exited {run.returncode}: {run.stderr[-1500:]}")
    return time.perf_counter() - started, run.stdout + run.stderr


def _data_files(work: Path) -> None:
    import yaml

    if (work / "cfg.yaml").exists():
        return
    (work / "cfg.yaml").write_text(yaml.safe_dump(config(accelerator="cpu" if SMOKE else "gpu", devices=1)))
    frames(512 // SCALE, 10).to_csv(work / "train.csv", index=False)
    frames(256 // SCALE, 11).to_csv(work / "val.csv", index=False)
    frames(512 // SCALE, 12).to_csv(work / "test.csv", index=False)
    frames(1024 // SCALE, 13, long=True).to_csv(work / "long.csv", index=False)


def stage_bundles(work: Path) -> dict:
    import numpy as np
    import pandas as pd

    import bsmfusion
    from bsmfusion.evaluation.metrics import classification_metrics

    _data_files(work)
    out = {}
    for strategy in ("ddp", "fsdp"):
        seconds, log = _cli("train", "--config", str(work / "cfg.yaml"), "--train", str(work / "train.csv"), "--val",
                            str(work / "val.csv"), "--out", str(work / strategy), "--quiet", "--set",
                            f"train.strategy={strategy}", timeout=60)
        out[f"{strategy}_train_seconds"] = seconds
    test = pd.read_csv(work / "test.csv")
    probs = {}
    for strategy in ("ddp", "fsdp"):
        predictor = bsmfusion.load(work / strategy, device=DEVICE, precision="fp32")
        probs[strategy] = predictor.predict_proba(test)[:, 1]
        metrics = classification_metrics(test["label"].to_numpy(), predictor.predict_proba(test))
        out[f"{strategy}_test_roc_auc"] = metrics.get("roc_auc")
    out["max_abs_prob_diff_ddp_vs_fsdp"] = float(np.abs(probs["ddp"] - probs["fsdp"]).max())
    return out


def stage_predict(work: Path) -> dict:
    import pandas as pd

    _data_files(work)
    if not (work / "ddp" / "manifest.json").is_file():
        _cli("train", "--config", str(work / "cfg.yaml"), "--train", str(work / "train.csv"), "--val",
             str(work / "val.csv"), "--out", str(work / "ddp"), "--quiet", timeout=40)
    result = {}
    for precision in ("bf16", "fp32"):
        seconds, log = _cli("predict", "--model", str(work / "ddp"), "--data", str(work / "long.csv"), "--out",
                            str(work / f"local-{precision}.parquet"), "--device", DEVICE, "--precision", precision,
                            "--batch-size", "64", "--quiet", timeout=30)
        rows = len(pd.read_parquet(work / f"local-{precision}.parquet"))
        result[f"{precision}_rows_per_s_end_to_end"] = rows / seconds
        result[f"{precision}_seconds"] = seconds
    result["rows"] = rows
    return result


def stage_ray(work: Path) -> dict:
    import numpy as np
    import pandas as pd

    try:
        import ray  # noqa: F401
    except ImportError as err:
        return {"skipped": f"ray cannot be imported here ({err}); the device tool carries at most 64 MiB and the "
                           "ray wheel alone is ~79 MB"}
    if not (work / "local-fp32.parquet").is_file():
        stage_predict(work)
    seconds, log = _cli("predict", "--model", str(work / "ddp"), "--data", str(work / "long.csv"), "--out",
                        str(work / "ray_out"), "--ray", "--ray-actors", "1", "--ray-gpus-per-actor", "0" if SMOKE else "1",
                        "--precision", "fp32", "--quiet", timeout=75)
    local = pd.read_parquet(work / "local-fp32.parquet").sort_values("id").reset_index(drop=True)
    remote = pd.read_parquet(work / "ray_out").sort_values("id").reset_index(drop=True)
    same_ids = local["id"].tolist() == remote["id"].tolist()
    diff = float(np.nanmax(np.abs(local["prob_1"].to_numpy() - remote["prob_1"].to_numpy()))) if same_ids else None
    return {"seconds_with_ray_start": seconds, "rows": len(remote), "same_ids": same_ids,
            "max_abs_prob_diff_vs_local_cuda": diff, "columns_equal": list(local.columns) == list(remote.columns)}


STAGES = {"env": stage_env, "speed": stage_speed, "train": stage_train, "bundles": stage_bundles,
          "predict": stage_predict, "ray": stage_ray}


# ------------------------------------------------------------------------------------------------ the driver
def markdown(results: dict) -> str:
    env = results.get("env", {})
    lines = ["# GPU check", "", f"GPU: {env.get('gpu', '?')}, torch {env.get('torch', '?')}, CUDA {env.get('cuda', '?')}, "
             f"Python {env.get('python', '?')}; precision auto on CUDA: {env.get('precision_auto', '?')}; bf16 matmul "
             f"8192³ measured {env.get('bf16_matmul_tflops', float('nan')):.0f} TFLOP/s (nominal "
             f"{env.get('nominal_bf16_tflops')}).", ""]
    speed = results.get("speed", {})
    if "scoring" in speed:
        lines += ["Scoring, bert-base-sized encoder (random weights), T=128, C=4, batch 64, pre-tokenised:", "",
                  "| threads | path | precision | threads/s | encoder TFLOP/s | MFU (measured bf16 peak) | tokens computed / real |",
                  "|---|---|---|---|---|---|---|"]
        for r in speed["scoring"]:
            mfu = f"{100 * r['mfu_measured_peak']:.0f}%" if r["mfu_measured_peak"] is not None else "—"
            lines.append(f"| {r['threads']} | {r['path']} | {r['precision']} | {r['threads_per_s']:,.0f} | "
                         f"{r['encoder_tflops']:.0f} | {mfu} | {r['tokens_computed_per_real']:.2f} |")
        lines.append("")
    for name in ("train", "bundles", "predict", "ray"):
        if name in results:
            lines.append(f"- {name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in results[name].items()))
    for name, error in results.get("failed", {}).items():
        lines.append(f"- {name} FAILED: {error}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--stage", choices=list(STAGES), help="run one stage in this process and print its JSON")
    parser.add_argument("--work", help="scratch folder shared by the stages (bundles, CSVs)")
    parser.add_argument("--peak", type=float, help="bf16 TFLOP/s the MFU is measured against")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage:
        work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
        work.mkdir(parents=True, exist_ok=True)
        fn = STAGES[args.stage]
        result = fn(work, args.peak) if args.stage in ("speed", "train") else fn(work)
        print("RESULT " + json.dumps(result))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    results: dict = {"failed": {}}
    log = open(out / "check.log", "a", encoding="utf-8")
    for name, limit in STAGE_LIMITS.items():
        peak = results.get("env", {}).get("bf16_matmul_tflops")
        argv = [sys.executable, __file__, "--stage", name, "--out", str(out), "--work", str(work)]
        if peak:
            argv += ["--peak", str(peak)]
        started = time.perf_counter()
        try:
            run = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
            log.write(f"===== {name} (rc {run.returncode}, {time.perf_counter() - started:.1f} s)\n{run.stdout}\n"
                      f"{run.stderr[-20000:]}\n")
            found = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode == 0 and found:
                results[name] = json.loads(found[-1][len("RESULT "):])
            else:
                results["failed"][name] = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1][:300]
        except subprocess.TimeoutExpired:
            results["failed"][name] = f"over its {limit} s limit"
            log.write(f"===== {name}: over its {limit} s limit\n")
        log.flush()
        print(f"{name}: {'ok' if name in results else 'FAILED: ' + results['failed'][name]} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
        (out / "gpu_check.md").write_text(markdown(results))
    print(markdown(results))
    return 0 if not results["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
