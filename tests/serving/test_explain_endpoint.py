"""POST /v1/explain: the body, key and limits of /v1/predict; per record both levels of attribution."""
import httpx
import pytest

import bsmfusion
from bsmfusion.serving.app import ServerSettings, create_app
from tests.helpers import frame_for, running

KEY = "explain-key"


@pytest.mark.slow
def test_explain_endpoint_answers_per_record_with_the_same_auth_and_limits(bundle_factory):
    predictor = bsmfusion.load(bundle_factory("tfidf_lr", signal="thread", rows=(300, 120)).path)
    frame = frame_for("thread", 3, 6)
    records = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]
    records[2] = {k: v for k, v in records[2].items() if k != "price"}
    with running(create_app(predictor, ServerSettings(api_key=KEY, max_records=3))) as base:
        assert httpx.post(f"{base}/v1/explain", json=records[0]).status_code == 401
        too_many = httpx.post(f"{base}/v1/explain", json=records * 2, headers={"X-API-Key": KEY})
        assert too_many.status_code == 413
        answer = httpx.post(f"{base}/v1/explain", json={"records": records}, headers={"X-API-Key": KEY}, timeout=60)
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["id"] for r in results] == [0, 1, 2] and "missing field 'price'" in results[2]["error"]
    expected = predictor.explain(frame.iloc[:2], level="rows")
    for got, want in zip(results[:2], expected):
        assert got["decision"] == want["decision"] and got["score"] == pytest.approx(want["score"])
        assert [m["contribution"] for m in got["messages"]] == pytest.approx([m["contribution"] for m in want["messages"]])
        assert sum(f["contribution"] for f in got["features"]) == pytest.approx(got["tab_contribution"], abs=1e-6)
