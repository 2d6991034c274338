"""Re-scoring benchmark (issue 10): long cb_nosale threads replayed message by message through `bsmfusion serve`
(each request = the thread so far), with the chunk-vector cache off and on.

    .venv/bin/python benchmarks/rescoring.py [--threads 16] [--model BUNDLE] [--label NAME] [--precision fp32]
    .venv/bin/python benchmarks/rescoring.py --label default --model BUNDLE   # a default (ensemble) bundle, e.g.
        from `benchmarks/default_bundle.py --task cb_nosale`: counts are per neural member
    .venv/bin/python benchmarks/rescoring.py --render   # rewrite docs/performance.md from the stored JSON

Threads: cb_nosale test threads joined until each has ≥ `--min-tokens` tokens (`tasks.long_threads`, as
benchmarks/speed.py's long set), split into their messages (one per line). T=128, C=4, MiniLM-L6, concat fusion
(an untrained head unless `--model` names a trained cb_nosale bundle: the encoder's cost is the same). Each server
runs in its own process (`bsmfusion serve --chunk-cache-mb 0` vs `256`), `--concurrency` clients each replay whole
threads, one request per message. Reports, per server: encoder chunks computed per request (without the cache:
every real chunk of the request; with it: the cache's `encoded` counter from `/v1/model`), requests/s, p50/p99
latency, and the largest probability difference between the two servers (fp32: ≤ 1e-6 expected). Writes
benchmarks/results/rescoring.json and the table between the `<!-- rescoring.py -->` markers of `--out`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
T, C = 128, 4
KEY = "rescoring-benchmark-key"
MARK, END = "<!-- rescoring.py -->", "<!-- end rescoring.py -->"
from load import free_port  # noqa: E402


def replay_threads(n_threads: int, min_tokens: int) -> tuple[dict, list[list[dict]]]:
    """(the cb_nosale config dict at T, C; `n_threads + 1` threads, each the list of its requests: the record
    after its 1st, 2nd, ... message). The last thread only warms the servers up."""
    from bsmfusion.config import config_from_dict
    from bsmfusion.data.text import load_tokenizer, tokenizer_source
    from tasks import TASKS, long_threads

    task = TASKS["cb_nosale"]()
    raw = task.config("concat", text={"max_chunks": C, "chunk_tokens": T})
    cfg = config_from_dict(raw)
    column = cfg.data.text[0]
    tokenizer = load_tokenizer(tokenizer_source(cfg.text))
    texts = long_threads(task.test, column, tokenizer, min_tokens)[: n_threads + 1]
    if len(texts) < n_threads + 1:
        raise SystemExit(f"--threads {n_threads}: cb_nosale's test split makes only {len(texts) - 1} long threads "
                         f"of ≥ {min_tokens} tokens; ask for fewer")
    features = json.loads(task.test.iloc[: len(texts)].to_json(orient="records"))
    threads = []
    for i, (text, row) in enumerate(zip(texts, features)):
        messages = [line for line in text.split("\n") if line.strip()]
        threads.append([{**row, column: "\n".join(messages[:k]), cfg.data.id: f"{i}:{k}"}
                        for k in range(1, len(messages) + 1)])
    return raw, threads


def untrained_bundle(raw: dict, folder: Path) -> Path:
    """A concat bundle with the real MiniLM encoder and an untrained head, fitted on cb_nosale's training rows."""
    from bsmfusion.bundle import write_bundle
    from bsmfusion.config import config_from_dict
    from bsmfusion.data.preprocess import RowPreprocessor
    from bsmfusion.data.text import load_tokenizer, tokenizer_source
    from bsmfusion.models.classifier import build_model
    from tasks import TASKS

    cfg = config_from_dict(raw)
    tokenizer = load_tokenizer(tokenizer_source(cfg.text))
    preprocessor = RowPreprocessor.fit(cfg, tokenizer, TASKS["cb_nosale"]().train)
    model = build_model(cfg, preprocessor.tabular.numeric_dim, preprocessor.tabular.cardinalities).eval()
    return write_bundle(folder / "cb_concat", cfg=cfg, preprocessor=preprocessor, tokenizer=tokenizer, model=model,
                        threshold=0.5, metrics={})


def neural_models(bundle: Path) -> list:
    """The torch fusions that score with `bundle`: itself, or an ensemble's neural members of positive weight."""
    from bsmfusion.bundle import load_bundle

    loaded = load_bundle(bundle)
    if loaded.kind == "neural":
        return [loaded]
    return [member.bundle for member in loaded.model.neural_members()]


def chunks_per_request(bundle: Path, threads: list[list[dict]]) -> list[int]:
    """Real chunks of each request: what a server without the cache encodes for it, per neural model."""
    import pandas as pd

    preprocessor = neural_models(bundle)[0].preprocessor
    frame = pd.DataFrame([r for thread in threads for r in thread])
    return [len(t.chunks) for t in preprocessor.encode(frame, with_labels=False).threads]


async def replay(base: str, threads: list[list[dict]], concurrency: int) -> dict:
    """Each client takes whole threads and sends their requests in order, one at a time (a live thread)."""
    latencies: list[float] = []
    probs: dict[str, float] = {}
    errors = 0
    queue = iter(threads)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for thread in queue:
            for record in thread:
                started = time.perf_counter()
                response = await client.post("/v1/predict", json=record)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or response.json()["results"][0].get("error"):
                    errors += 1
                    continue
                result = response.json()["results"][0]
                probs[str(result["id"])] = result["probabilities"]["1"]

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": KEY}, limits=limits, timeout=300) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "seconds": elapsed, "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "probs": probs}


def run_server(bundle: Path, cache_mb: float, precision: str, threads: list[list[dict]], warmup: list[dict],
               concurrency: int) -> dict:
    """Start `bsmfusion serve` with `--chunk-cache-mb cache_mb`, warm it up on a thread outside the replay, replay
    `threads`, and read the cache counters from `/v1/model` before and after."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "BSM_RESCORING_KEY": KEY}
    command = [sys.executable, "-m", "bsmfusion", "serve", "--model", str(bundle), "--port", str(port),
               "--api-key-env", "BSM_RESCORING_KEY", "--precision", precision, "--chunk-cache-mb", f"{cache_mb:g}"]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for _ in range(900):
                if server.poll() is not None:
                    break
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                server.poll()
            if server.returncode is not None:
                log.seek(0)
                raise SystemExit(f"bsmfusion serve did not start: {log.read().decode()[-2000:]}")
            asyncio.run(replay(base, [warmup[:3]], 1))  # model and tokenizer warm, the replay's chunks cold
            info = lambda: httpx.get(f"{base}/v1/model", headers={"X-API-Key": KEY}).json()["chunk_cache"]  # noqa: E731
            before = info()
            result = asyncio.run(replay(base, threads, concurrency))
            after = info()
        finally:
            server.terminate()
            server.wait(timeout=30)
    result["chunk_cache"] = after
    if after.get("enabled"):
        result["encoded_chunks"] = after["encoded"] - before["encoded"]
        result["hits"] = after["hits"] - before["hits"]
    return result


def bundle_kind(bundle: Path) -> str:
    meta = json.loads((bundle / "meta.json").read_text())
    if meta.get("kind") != "ensemble":
        return meta.get("fusion", "neural")
    return "ensemble of " + " + ".join(m["name"] for m in meta["members"])


def render_markdown(results: dict) -> str:
    off, on = results["servers"]["off"], results["servers"]["on"]
    shape = results["threads"]
    per = results.get("neural_models", 1)
    lines = [f"Command: `{results['command']}`", "",
             f"{shape['threads']} long cb_nosale threads (test split, joined until ≥ {shape['min_tokens']} tokens), "
             f"{shape['messages_mean']:.1f} messages each on average ({shape['requests']} requests per server), "
             f"T = {T}, C = {C}, MiniLM-L6, {results['bundle']}, `--precision {results['precision']}`, "
             f"{results['concurrency']} client(s) each replaying whole threads one message at a time. "
             f"CPU: {results['cpu_capability']}, {results['cores']} cores."
             + (f" The bundle scores with {per} neural models (each its own cache of "
                f"{results['cache_mb'] / per:g} MB); chunk counts are per neural model." if per > 1 else ""), "",
             "| server | encoder chunks / request / neural model | requests/s | × uncached | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    for name, r in (("`serve --chunk-cache-mb 0` (no cache)", off), (f"`serve --chunk-cache-mb {results['cache_mb']:g}`", on)):
        lines.append(f"| {name} | {r['chunks_per_request']:.2f} | {r['requests_per_s']:.1f} | "
                     f"{r['requests_per_s'] / off['requests_per_s']:.2f}× | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['errors']} |")
    ceiling = off["chunks_per_request"] / max(on["chunks_per_request"], 1e-9)
    lines += ["", f"- Cache hit rate over the replay: {on['hits'] / max(on['hits'] + on['encoded_chunks'], 1):.1%}; "
              f"encoder-work ceiling (chunks without / with the cache): {ceiling:.2f}×.",
              f"- Largest probability difference between the two servers: {results['max_abs_prob_diff']:.1e} "
              f"({results['precision']}).",
              f"- Targets (issues 10, 23): ≤ 1.2 encoded chunks per request per neural model — "
              f"{on['chunks_per_request']:.2f} "
              f"({'met' if on['chunks_per_request'] <= 1.2 else 'missed'}); ≥ 2× the uncached requests/s — "
              f"{on['requests_per_s'] / off['requests_per_s']:.2f}× "
              f"({'met' if on['requests_per_s'] >= 2 * off['requests_per_s'] else 'missed'})."]
    return "\n".join(lines) + "\n"


def markers(label: str) -> tuple[str, str]:
    """The markers of one run's table: `<!-- rescoring.py -->` for the single concat model, with the label else."""
    if label == "concat":
        return MARK, END
    return f"<!-- rescoring.py {label} -->", f"<!-- end rescoring.py {label} -->"


def write_between_markers(out: Path, table: str, label: str = "concat") -> None:
    """Replace what lies between the label's markers of `out` (appending a section if absent)."""
    mark, end = markers(label)
    text = out.read_text() if out.is_file() else "# Performance\n"
    if mark not in text:
        title = "the default bundle" if label == "default" else label
        text = text.rstrip("\n") + f"\n\n### Re-scoring growing threads: {title}\n\n{mark}\n{end}\n"
    header, rest = text.split(mark, 1)
    footer = rest.split(end, 1)[1] if end in rest else "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{header}{mark}\n{table}{end}{footer}")


def json_path(label: str) -> Path:
    name = "rescoring.json" if label == "concat" else f"rescoring_{label}.json"
    return ROOT / "benchmarks" / "results" / name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=16, help="long threads replayed per server")
    parser.add_argument("--min-tokens", type=int, default=4 * T, help="tokens a joined long thread reaches at least")
    parser.add_argument("--model", help="a trained cb_nosale bundle (T=128, C=4); default: an untrained concat head")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32",
                        help="both servers' precision (fp32: the two must agree to 1e-6)")
    parser.add_argument("--cache-mb", type=float, default=256, help="--chunk-cache-mb of the cached server")
    parser.add_argument("--concurrency", type=int, default=1, help="clients, each replaying whole threads")
    parser.add_argument("--label", default="concat", help="names the run's JSON (rescoring_LABEL.json; 'concat': "
                        "rescoring.json) and its table's markers in --out; 'default' for a default bundle")
    parser.add_argument("--render", action="store_true", help="only rewrite --out from the stored JSON of every label")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args()
    if args.render:
        for path in sorted((ROOT / "benchmarks" / "results").glob("rescoring*.json")):
            label = path.stem.removeprefix("rescoring").removeprefix("_") or "concat"
            write_between_markers(Path(args.out), render_markdown(json.loads(path.read_text())), label)
        return
    raw, threads = replay_threads(args.threads, args.min_tokens)
    warmup, threads = threads[-1], threads[:-1]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(args.model) if args.model else untrained_bundle(raw, Path(tmp))
        chunks = chunks_per_request(bundle, threads)
        per = len(neural_models(bundle))
        servers = {}
        for name, mb in (("off", 0.0), ("on", args.cache_mb)):
            servers[name] = run_server(bundle, mb, args.precision, threads, warmup, args.concurrency)
            print(name, json.dumps({k: v for k, v in servers[name].items() if k != "probs"}), flush=True)
    servers["off"]["chunks_per_request"] = float(np.mean(chunks))
    servers["on"]["chunks_per_request"] = servers["on"]["encoded_chunks"] / servers["on"]["requests"] / per
    common = sorted(set(servers["off"]["probs"]) & set(servers["on"]["probs"]))
    diff = max((abs(servers["off"]["probs"][i] - servers["on"]["probs"][i]) for i in common), default=float("nan"))
    from bsmfusion.precision import cpu_capability

    results = {"command": " ".join(["python", *sys.argv]), "precision": args.precision, "cache_mb": args.cache_mb,
               "concurrency": args.concurrency, "cpu_capability": cpu_capability(), "cores": os.cpu_count(),
               "bundle": (f"trained bundle {Path(args.model).name} ({bundle_kind(Path(args.model))})" if args.model
                          else "concat fusion with an untrained head"),
               "neural_models": per,
               "threads": {"threads": len(threads), "min_tokens": args.min_tokens, "requests": len(chunks),
                           "messages_mean": float(np.mean([len(t) for t in threads]))},
               "max_abs_prob_diff": float(diff),
               "servers": {name: {k: v for k, v in r.items() if k != "probs"} for name, r in servers.items()}}
    json_path(args.label).parent.mkdir(parents=True, exist_ok=True)
    json_path(args.label).write_text(json.dumps(results, indent=2))
    table = render_markdown(results)
    write_between_markers(Path(args.out), table, args.label)
    print(table)


if __name__ == "__main__":
    main()
