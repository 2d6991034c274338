"""The scoring server on loopback: auth, limits, validation, and 200 concurrent requests vs the batch predictor."""
import asyncio

import httpx
import numpy as np
import pytest

import bsmfusion
from bsmfusion.serving.app import ServerSettings, create_app
from tests.helpers import PRECISIONS, planted_frame, prob_tolerance, running

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def bundle(bundle_factory):
    """gate, one epoch on 64 planted text rows (the session's shared bundle)."""
    return bundle_factory("gate").path


@pytest.fixture(scope="module", params=PRECISIONS)
def server(bundle, request):
    app = create_app(bsmfusion.load(bundle, precision=request.param),
                     ServerSettings(api_key=KEY, max_body_bytes=20_000, max_records=50))
    with running(app) as base:
        yield base


def records(n, seed=3):
    frame = planted_frame(n, "text", seed)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]


def test_health_needs_no_key_and_model_info_has_no_secret(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    info = httpx.get(f"{server}/v1/model", headers={"X-API-Key": KEY}).json()
    assert info["fusion"] == "gate" and info["label_names"] == ["0", "1"] and "validation_metrics" in info
    assert KEY not in str(info)
    schema = httpx.get(f"{server}/openapi.json").json()
    assert "/v1/predict" in schema["paths"]


def test_auth_missing_wrong_and_right_key(server):
    body = records(1)[0]
    assert httpx.post(f"{server}/v1/predict", json=body).status_code == 401
    assert httpx.post(f"{server}/v1/predict", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{server}/v1/model").status_code == 401
    ok = httpx.post(f"{server}/v1/predict", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    assert httpx.post(f"{server}/v1/predict", json=body, headers={"X-API-Key": KEY}).status_code == 200


def test_malformed_and_oversize_requests(server):
    h = {"X-API-Key": KEY, "Content-Type": "application/json"}
    bad_json = httpx.post(f"{server}/v1/predict", content=b"{not json", headers=h)
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.json()["detail"]
    assert httpx.post(f"{server}/v1/predict", json=[1, 2], headers=h).status_code == 422
    assert httpx.post(f"{server}/v1/predict", json="text", headers=h).status_code == 422
    big = httpx.post(f"{server}/v1/predict", content=b"[" + b" " * 30_000 + b"]", headers=h)
    assert big.status_code == 413
    too_many = httpx.post(f"{server}/v1/predict", json=records(60), headers=h)
    assert too_many.status_code == 413


def test_per_record_errors_keep_their_place(server):
    recs = records(3)
    del recs[1]["price"]
    recs[2]["ratio"] = "not a number"
    out = httpx.post(f"{server}/v1/predict", json={"records": recs}, headers={"X-API-Key": KEY}).json()["results"]
    assert out[0]["error"] is None and out[0]["probabilities"] is not None
    assert "missing field 'price'" in out[1]["error"]
    assert "column 'ratio'" in out[2]["error"] and out[2]["probabilities"] is None
    assert [r["id"] for r in out] == [r["id"] for r in recs]


@pytest.mark.slow
def test_200_concurrent_requests_match_the_batch_predictor(server, bundle):
    recs = records(200, seed=9)
    precision = httpx.get(f"{server}/v1/model", headers={"X-API-Key": KEY}).json()["precision"]["used"]
    expected = bsmfusion.load(bundle, precision=precision).predict_records(recs)["prob_1"].to_numpy()

    async def fire():
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server, headers={"X-API-Key": KEY}, limits=limits, timeout=60) as client:
            responses = await asyncio.gather(*(client.post("/v1/predict", json=r) for r in recs))
        return responses

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    got = np.array([r.json()["results"][0]["probabilities"]["1"] for r in responses])
    # fp32: micro-batching cannot move a score; bf16: within bf16's rounding
    np.testing.assert_allclose(got, expected, atol=1e-6 if precision == "fp32" else prob_tolerance(precision))


@pytest.fixture(scope="module")
def no_id_server(bundle_factory):
    """A bundle without data.id behind a server that waits 300 ms to merge concurrent requests."""
    out = bundle_factory("concat", base="tiny", rows=(48, 24)).path  # tiny_config: fp32, no data.id
    predictor = bsmfusion.load(out, precision="fp32")
    assert predictor.bundle.cfg.data.id is None
    frames = []
    original = predictor.predict_frame
    predictor.predict_frame = lambda frame, **kw: frames.append(len(frame)) or original(frame, **kw)
    with running(create_app(predictor, ServerSettings(batch_wait_ms=300, max_batch=64))) as base:
        yield base, frames


def test_row_ids_are_per_request_when_requests_are_micro_batched(no_id_server):
    base, frames = no_id_server
    sizes = [3, 2, 4]
    recs = records(sum(sizes), seed=4)
    for r in recs:
        del r["id"]  # not data.id here: ids are positions
    bodies = [recs[sum(sizes[:k]):sum(sizes[:k + 1])] for k in range(len(sizes))]
    bodies[1][1]["ratio"] = "not a number"  # an error row keeps its per-request id too

    async def fire():
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json={"records": b}) for b in bodies))

    frames.clear()
    responses = asyncio.run(fire())
    assert frames == [sum(sizes)]  # the three requests were scored in one model call
    results = [r.json()["results"] for r in responses]
    assert [[row["id"] for row in res] for res in results] == [[0, 1, 2], [0, 1], [0, 1, 2, 3]]
    assert "column 'ratio'" in results[1][1]["error"] and results[1][0]["error"] is None
