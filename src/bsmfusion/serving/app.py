"""`bsmfusion serve`: an authenticated FastAPI scoring server with micro-batching.

* `POST /v1/predict` — one record (JSON object) or a list of records (or `{"records": [...]}`); answers one result
  per record: probabilities, label, modality contributions, or a per-record `error`.
* `POST /v1/explain` — the same body, auth and limits; answers one explanation per record (score, decision,
  contributions, each message's and tabular column's share: docs/explain.md), computed outside the micro-batcher.
* `GET /healthz` — liveness, never needs the key. `GET /v1/model` — the labels and which is the positive class (and
  why), config, versions, validation metrics, the calibration and the active decision (policy, threshold, whether
  it is the bundle's or an override), and the chunk-vector cache's size and counters (`chunk_cache`: hits, encoded
  chunks; see `scoring.chunk_cache`).
* With an API key every other request needs `Authorization: Bearer KEY` or `X-API-Key: KEY` (constant-time check).
* Bodies over `max_body_bytes` get 413, more than `max_records` records 413, malformed JSON or a wrong shape 422,
  and so does a record holding a number that is not finite (`NaN`, `Infinity`, `1e999`), naming the record and
  field: such a value would be scored as a clipped extreme instead of being refused as a table's cell is.
* Concurrent requests are gathered for up to `batch_wait_ms` into one model call of at most `max_batch` records.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ..inference.columns import CONTRIBUTION_COLUMNS
from ..scoring.options import ScoringOptions

PUBLIC_PATHS = {"/healthz", "/docs", "/openapi.json", "/redoc"}
# A server re-scores live threads, whose requests share all chunks but about one with the thread's previous
# request: 256 MB hold ~80k MiniLM chunk vectors (384 fp32 + key + overhead ≈ 3.2 KB each), ~20k live 4-chunk threads.
DEFAULT_CHUNK_CACHE_MB = 256.0


@dataclass
class ServerSettings:
    api_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_records: int = 256
    max_batch: int = 64
    batch_wait_ms: float = 5.0


class RecordResult(BaseModel):
    """One record's answer: scores, or an error saying why it could not be scored."""

    id: Any = None
    probabilities: dict[str, float] | None = None
    label: bool | int | float | str | None = None  # in the training labels' type: 0/1 labels answer 0/1
    text_contribution: float | None = None
    tab_contribution: float | None = None
    baseline: float | None = None
    text_share: float | None = None
    error: str | None = None


class PredictResponse(BaseModel):
    results: list[RecordResult]


RECORD_SCHEMA = {"type": "object", "description": "one row: the bundle's text, numeric and categorical columns (and id)"}
REQUEST_SCHEMA = {"oneOf": [
    {"type": "object", "properties": {"records": {"type": "array", "items": RECORD_SCHEMA}}, "required": ["records"]},
    RECORD_SCHEMA,
    {"type": "array", "items": RECORD_SCHEMA},
]}


class MicroBatcher:
    """Collects records from concurrent requests and scores them in one model call in a worker thread."""

    def __init__(self, predictor, settings: ServerSettings):
        self.predictor = predictor
        self.settings = settings
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    async def score(self, records: list[dict]) -> list[dict]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((records, future))
        return await future

    async def _run(self) -> None:
        while True:
            items = [await self.queue.get()]
            size = len(items[0][0])
            deadline = asyncio.get_running_loop().time() + self.settings.batch_wait_ms / 1000
            while size < self.settings.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                items.append(item)
                size += len(item[0])
            records = [r for recs, _ in items for r in recs]
            positions = [j for recs, _ in items for j in range(len(recs))]  # ids without data.id: per request
            try:
                results = await asyncio.to_thread(score_records, self.predictor, records, positions)
            except Exception as err:  # noqa: BLE001 - answer every waiting request, never hang it
                for _, future in items:
                    if not future.done():
                        future.set_exception(err)
                continue
            offset = 0
            for recs, future in items:
                if not future.done():
                    future.set_result(results[offset:offset + len(recs)])
                offset += len(recs)


def complete_records(cfg, records: list[dict], positions: list[int]) -> tuple[list[dict], list[int], pd.DataFrame]:
    """(results with an `error` for every record missing a feature column, the indices of the others, those
    others as a frame of the feature columns and `data.id`)."""
    required = [*(cfg.data.text if cfg.model.uses_text else []), *cfg.data.numeric, *cfg.data.categorical]
    results: list[dict] = [{} for _ in records]
    valid = []
    for i, record in enumerate(records):
        missing = [c for c in required if c not in record]
        if missing:
            results[i] = {"id": record.get(cfg.data.id) if cfg.data.id else positions[i],
                          "error": f"missing field '{missing[0]}'; every record needs {', '.join(required)}"}
        else:
            valid.append(i)
    columns = [*required, cfg.data.id] if cfg.data.id else required
    return results, valid, pd.DataFrame([{c: records[i].get(c) for c in columns} for i in valid])


def score_records(predictor, records: list[dict], positions: list[int] | None = None) -> list[dict]:
    """Score records; a record missing a feature column or with a bad value gets an `error` instead of scores.

    Without `data.id` a record's id is its position in its own request: `positions[i]` (records merged from
    several requests by the micro-batcher), by default `i`.
    """
    cfg = predictor.cfg
    positions = list(range(len(records))) if positions is None else positions
    results, valid, frame = complete_records(cfg, records, positions)
    if valid:
        scored = predictor.predict_frame(frame)
        for row, i in zip(scored.to_dict("records"), valid):
            identifier = row.get(cfg.data.id) if cfg.data.id else positions[i]
            if row["error"]:
                results[i] = {"id": identifier, "error": row["error"]}
                continue
            results[i] = {
                "id": identifier,
                "probabilities": {name: float(row[f"prob_{name}"]) for name in predictor.label_names},
                "label": _plain(row["predicted_label"]),
                **{name: _finite(row[name]) for name in CONTRIBUTION_COLUMNS},
            }
    return results


def explain_records(predictor, records: list[dict]) -> list[dict]:
    """`Predictor.explain_records` for request records; a record missing a feature column gets an `error`; without
    `data.id` a record's id is its position in the request."""
    cfg = predictor.cfg
    results, valid, frame = complete_records(cfg, records, list(range(len(records))))
    if valid:
        for i, explained in zip(valid, predictor.explain_records(frame)):
            identifier = explained.pop(cfg.data.id if cfg.data.id else "row", None)
            results[i] = {"id": identifier if cfg.data.id else i, **explained}
    return results


def non_finite(records: list[dict]) -> str | None:
    """The first record field holding a number that is not finite, as a one-line reason, else None. Python's JSON
    parser accepts `NaN` and `Infinity` (not JSON) and turns `1e999` (JSON) into infinity; none is a value."""
    for i, record in enumerate(records):
        for field, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                what = "NaN" if math.isnan(value) else "infinite (Infinity, or a number beyond ±1.8e308)"
                return (f"record {i}, field '{field}' is {what}, not a finite number; send a finite number, or null "
                        "for a missing value")
    return None


def _plain(value):
    """A NumPy scalar as the Python value JSON needs (np.int64(1) → 1)."""
    return value.item() if hasattr(value, "item") else value


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def positive_class(predictor) -> dict:
    """`positive_label` (binary: the class probabilities, thresholds and contributions are about; None for
    multiclass) and `positive_label_source` (the config key that chose it, or the sorting rule)."""
    from ..data.labels import positive_class_reason

    if len(predictor.label_names) != 2:
        return {"positive_label": None, "positive_label_source": None}
    return {"positive_label": _plain(predictor.label_values[1]),
            "positive_label_source": positive_class_reason(predictor.cfg)}


def create_app(predictor, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    batcher = MicroBatcher(predictor, settings)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="bsmfusion", version=predictor.bundle.meta.get("versions", {}).get("bsmfusion", "0"),
                  description="Scores buyer-seller message threads with their tabular facts.", lifespan=lifespan)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            return JSONResponse({"detail": f"request body over {settings.max_body_bytes} bytes"}, status_code=413)
        return await call_next(request)

    def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        supplied = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            supplied = auth[7:].strip()
        if not hmac.compare_digest(supplied.encode(), settings.api_key.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", dependencies=[Depends(require_key)])
    async def model_info() -> dict:
        bundle = predictor.bundle
        return {"fusion": bundle.meta.get("fusion"), "label_names": bundle.label_names,
                "labels": [_plain(v) for v in predictor.label_values], **positive_class(predictor),
                "threshold": predictor.threshold,
                "decision": predictor.decision.to_json(), "calibration": predictor.calibration.to_json(),
                "versions": bundle.meta.get("versions"), "created": bundle.meta.get("created"),
                "validation_metrics": bundle.metrics.get("validation"), "config": bundle.cfg.to_dict(),
                "precision": predictor.precision.to_json(), "precision_description": predictor.describe_precision(),
                "chunk_cache": predictor.chunk_cache_info()}

    async def read_records(request: Request) -> list[dict]:
        """The request's records, or the HTTPException (413, 422) its body earns: one check for every endpoint."""
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            raise HTTPException(status_code=413, detail=f"request body over {settings.max_body_bytes} bytes")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HTTPException(status_code=422, detail=f"body is not valid JSON: {err}") from None
        if isinstance(payload, dict) and isinstance(payload.get("records"), list):
            records = payload["records"]
        elif isinstance(payload, dict):
            records = [payload]
        elif isinstance(payload, list):
            records = payload
        else:
            raise HTTPException(status_code=422, detail="body must be a JSON object (one record), a list of records, or {\"records\": [...]}")
        if not records:
            raise HTTPException(status_code=422, detail="no records to score")
        bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
        if bad is not None:
            raise HTTPException(status_code=422, detail=f"record {bad} is not a JSON object")
        if len(records) > settings.max_records:
            raise HTTPException(status_code=413, detail=f"{len(records)} records in one request; the limit is {settings.max_records}")
        problem = non_finite(records)
        if problem is not None:
            raise HTTPException(status_code=422, detail=problem)
        return records

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=[Depends(require_key)],
              openapi_extra={"requestBody": {"content": {"application/json": {"schema": REQUEST_SCHEMA}}, "required": True}})
    async def predict(request: Request) -> PredictResponse:
        records = await read_records(request)
        results = await batcher.score(records)
        return PredictResponse(results=[RecordResult(**r) for r in results])

    @app.post("/v1/explain", dependencies=[Depends(require_key)],
              openapi_extra={"requestBody": {"content": {"application/json": {"schema": REQUEST_SCHEMA}}, "required": True}})
    async def explain(request: Request) -> dict:
        """The records of /v1/predict (same body, auth and limits) → one explanation per record: score, decision,
        contributions and each message's and column's share (docs/explain.md), or `error`."""
        records = await read_records(request)
        return {"results": await asyncio.to_thread(explain_records, predictor, records)}

    return app


def check_port(host: str, port: int) -> None:
    """Bind (host, port) as uvicorn will, and let go: a port in use is one line (`ConfigError`) before the model
    loads, not uvicorn's error after it."""
    import errno
    import socket

    from ..errors import ConfigError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} is in use; pass --port N") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}); check --host and "
                              "--port") from None
        except OverflowError as err:  # a port beyond 65535
            raise ConfigError(f"cannot listen on {host}:{port} ({err}); check --host and --port") from None


def serve(bundle_dir: str, options: ScoringOptions | None = None, *, host: str = "127.0.0.1", port: int = 8080,
          api_key: str | None = None, **settings) -> None:
    """Serve a bundle, scored as `options` say (`scoring.ScoringOptions`; its default here caches
    `DEFAULT_CHUNK_CACHE_MB` MB of chunk vectors, so a thread re-scored after each new message encodes about one
    chunk per request, per neural member); `settings` are `ServerSettings` fields (max_records, ...). A port in
    use is refused before the bundle loads (`check_port`)."""
    import sys

    import uvicorn

    from ..inference.predictor import load

    check_port(host, port)
    predictor = load(bundle_dir, options or ScoringOptions(chunk_cache_mb=DEFAULT_CHUNK_CACHE_MB))
    print(f"precision: {predictor.describe_precision()}", file=sys.stderr)
    print(f"chunk cache: {predictor.chunk_cache_info()['description']}", file=sys.stderr)
    print(predictor.decision.summary(), file=sys.stderr)
    app = create_app(predictor, ServerSettings(api_key=api_key, **settings))
    uvicorn.run(app, host=host, port=port, log_level="info")
