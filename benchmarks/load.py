"""Load benchmark for `bsmfusion serve`: throughput and p50/p99 latency at 1, 8 and 64 concurrent clients,
single-record requests, loopback only, a bounded number of requests; stops by itself.

    .venv/bin/python benchmarks/load.py --model BUNDLE [--requests 300] [--out benchmarks/results/load.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_level(base: str, records: list[dict], concurrency: int, total: int, key: str) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in counter:
            started = time.perf_counter()
            response = await client.post("/v1/predict", json=records[i % len(records)])
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": total, "errors": errors, "requests_per_s": total / elapsed,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained bundle (e.g. from benchmarks/quality.py)")
    parser.add_argument("--task", default="dnd_nodeal", help="task whose test rows are sent")
    parser.add_argument("--requests", type=int, default=300, help="requests per concurrency level")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    args = parser.parse_args()
    from tasks import TASKS

    test = TASKS[args.task]().test
    records = json.loads(test.to_json(orient="records"))
    port, key = free_port(), "load-test-key"
    env = {**os.environ, "BSM_LOAD_KEY": key}
    server = subprocess.Popen([sys.executable, "-m", "bsmfusion", "serve", "--model", args.model, "--port", str(port),
                               "--api-key-env", "BSM_LOAD_KEY"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start: " + server.stderr.read().decode()[-2000:])
        asyncio.run(run_level(base, records, 4, 20, key))  # warm-up
        levels = [asyncio.run(run_level(base, records, c, args.requests, key)) for c in (1, 8, 64)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"command": " ".join(["python", *sys.argv]), "model": args.model, "levels": levels}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| clients | requests | errors | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|")
    for r in levels:
        print(f"| {r['concurrency']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")


if __name__ == "__main__":
    main()
