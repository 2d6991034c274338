"""The chunk-vector cache: same fp32 scores with and without it, about one encoded chunk per re-scored message, an
LRU bounded in bytes, thread safety, keys per bundle and precision, and where it is off (ONNX, tab_only)."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch

import bsmfusion
from bsmfusion.cli import main
from bsmfusion.scoring.chunk_cache import ENTRY_OVERHEAD_BYTES, ChunkVectorCache, cache_namespace
from tests.helpers import (FP32, PRECISIONS, assert_same_scores, growing_frame, make_frame, prob_tolerance,
                           random_bundle, thread_lines)



@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return random_bundle(tmp_path_factory.mktemp("cache") / "model")


@pytest.mark.parametrize("text", [{}, {"chunk_reduce": "attention"}, {"chunk_reduce": "padded_mean"},
                                  {"pooling": "cls", "encode": "plain"}], ids=["masked_mean", "attention", "padded_mean", "plain_cls"])
def test_fp32_scores_with_the_cache_equal_scores_without_it(tmp_path, text):
    out = random_bundle(tmp_path / "m", **text)
    frame = pd.concat([make_frame(30, seed=5), growing_frame(thread_lines(12))], ignore_index=True)
    frame.loc[0, "dialogue"] = ""  # an empty thread is one chunk of special tokens, cached like any other
    frame["id"] = [f"r{i}" for i in range(len(frame))]
    reference = bsmfusion.load(out, batch_size=7).predict_frame(frame)
    cached = bsmfusion.load(out, batch_size=7, chunk_cache_mb=16)
    first = cached.predict_frame(frame)  # cold: chunks shared by the thread's prefixes are already hits
    second = cached.predict_frame(frame)  # warm: every chunk a hit (same batches: padded_mean depends on them)
    assert_same_scores(first, reference)
    assert_same_scores(second, reference)
    stats = cached.chunk_cache.stats()
    table = cached.bundle.preprocessor.encode(frame, with_labels=False)
    real_chunks = sum(len(t.chunks) for t in table.threads)
    distinct = len({tuple(c) for t in table.threads for c in t.chunks})
    assert stats["lookups"] == 2 * real_chunks and stats["hits"] + stats["misses"] == stats["lookups"]
    assert stats["encoded"] == stats["entries"] == distinct < real_chunks  # each distinct chunk encoded once
    assert stats["hits"] >= real_chunks  # the whole second pass


@pytest.mark.parametrize("precision", PRECISIONS)
def test_rescoring_a_growing_thread_encodes_about_one_chunk_per_request(bundle, precision):
    lines = thread_lines(24)
    requests = growing_frame(lines)
    plain = bsmfusion.load(bundle, precision=precision)
    cached = bsmfusion.load(bundle, precision=precision, chunk_cache_mb=4)
    assert cached.chunk_cache_info()["description"] == f"4 MB of chunk vectors ({precision})"
    tolerance = FP32 if precision == "fp32" else prob_tolerance(precision)
    encoded, chunks_per_request = [], []
    for k in range(len(requests)):
        row = requests.iloc[[k]].reset_index(drop=True)
        before = cached.chunk_cache.stats()["encoded"]
        assert_same_scores(cached.predict_frame(row), plain.predict_frame(row), atol=tolerance)
        encoded.append(cached.chunk_cache.stats()["encoded"] - before)
        chunks_per_request.append(len(plain.bundle.preprocessor.encode(row, with_labels=False).threads[0].chunks))
    thread = plain.bundle.preprocessor.encode(requests.iloc[[-1]], with_labels=False).threads[0]
    assert thread.truncated and thread.total_chunks >= 8  # the head + tail window (C = 3) moved many times
    assert encoded[0] == 1 and max(encoded) <= 2
    assert np.mean(encoded) <= 1.2  # the new message's chunk, sometimes the one it spilled into
    assert np.mean(chunks_per_request) >= 2.5  # what every request encodes without the cache
    stats = cached.chunk_cache.stats()
    assert stats["encoded"] == sum(encoded) and stats["hits"] == sum(chunks_per_request) - sum(encoded)


def test_lru_keeps_the_most_recently_used_entries_within_its_byte_limit():
    vector = torch.arange(100, dtype=torch.float32)  # 400 bytes
    key = lambda i: ("ns", np.array([101, i, 102], dtype=np.int32).tobytes())  # noqa: E731  12 bytes
    size = ChunkVectorCache.entry_bytes(key(0), vector)
    assert size == 400 + 12 + ENTRY_OVERHEAD_BYTES
    cache = ChunkVectorCache(max_mb=3.5 * size / 1e6)  # room for 3 entries
    cache.put_many([key(1), key(2), key(3)], [vector, vector + 1, vector + 2])
    assert cache.get_many([key(1)])[0][0].item() == 0.0  # 1 is now the most recently used
    cache.put_many([key(4)], [vector + 3])  # evicts 2, the least recently used
    found = cache.get_many([key(i) for i in (1, 2, 3, 4)])
    assert [None if v is None else v[0].item() for v in found] == [0.0, None, 2.0, 3.0]
    stats = cache.stats()
    assert stats["entries"] == 3 and stats["bytes"] == 3 * size <= stats["max_bytes"] and stats["evictions"] == 1
    assert (stats["lookups"], stats["hits"], stats["misses"]) == (5, 4, 1)
    big = torch.zeros(10_000)
    cache.put_many([key(9)], [big])  # larger than the whole cache: not stored, nothing evicted
    assert cache.get_many([key(9)]) == [None] and len(cache) == 3
    with pytest.raises(ValueError, match="0 turns the cache off"):
        ChunkVectorCache(-1)


def test_keys_separate_bundles_precisions_and_devices(tmp_path, bundle):
    other = random_bundle(tmp_path / "other", fusion="concat")
    names = {cache_namespace(bundle, "fp32", "cpu"), cache_namespace(bundle, "bf16", "cpu"),
             cache_namespace(other, "fp32", "cpu"), cache_namespace(bundle, "fp32", "cuda")}
    assert len(names) == 4
    assert cache_namespace(bundle, "fp32", "cpu") == cache_namespace(bundle, "fp32", torch.device("cpu"))


def test_concurrent_scoring_through_one_cache_gives_the_serial_scores(bundle):
    requests = growing_frame(thread_lines(20))
    reference = bsmfusion.load(bundle).predict_frame(requests)
    cached = bsmfusion.load(bundle, chunk_cache_mb=4)
    rows = [requests.iloc[[k]].reset_index(drop=True) for k in range(len(requests))] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(cached.predict_frame, rows))
    assert_same_scores(pd.concat(results[: len(requests)], ignore_index=True), reference)
    assert_same_scores(pd.concat(results[len(requests):2 * len(requests)], ignore_index=True), reference)
    stats = cached.chunk_cache.stats()
    assert stats["hits"] + stats["misses"] == stats["lookups"] and stats["entries"] <= stats["encoded"]


def test_cache_is_off_where_nothing_can_be_cached(tmp_path, bundle):
    assert bsmfusion.load(bundle).chunk_cache is None
    assert bsmfusion.load(bundle).chunk_cache_info() == {"enabled": False, "description": "off (size 0 MB)"}
    tab = random_bundle(tmp_path / "tab", fusion="tab_only")
    info = bsmfusion.load(tab, chunk_cache_mb=8).chunk_cache_info()
    assert info == {"enabled": False, "description": "off: the model reads no text (tab_only)"}
    with pytest.raises(ValueError, match="0 turns the cache off"):
        bsmfusion.load(bundle, chunk_cache_mb=-1)


def test_onnx_engine_says_it_does_not_cache(tmp_path):
    pytest.importorskip("onnxruntime")
    from bsmfusion.inference.onnx_export import export_onnx

    out = random_bundle(tmp_path / "m")
    export_onnx(out)
    predictor = bsmfusion.load(out, engine="onnx", chunk_cache_mb=64)
    assert predictor.chunk_cache is None
    assert predictor.chunk_cache_info() == {
        "enabled": False, "description": "off: the ONNX engine runs encoder and fusion in one graph (--engine torch caches)"}


def test_server_reports_the_cache_counters(bundle):
    from fastapi.testclient import TestClient

    from bsmfusion.serving.app import create_app

    requests = growing_frame(thread_lines(6))
    with TestClient(create_app(bsmfusion.load(bundle, chunk_cache_mb=4))) as client:
        for record in requests.to_dict("records"):
            assert client.post("/v1/predict", json=record).status_code == 200
        info = client.get("/v1/model").json()["chunk_cache"]
    assert info["enabled"] and info["description"] == "4 MB of chunk vectors (fp32)"
    assert info["lookups"] == info["hits"] + info["misses"] and info["encoded"] <= len(requests) + 1
    assert info["max_bytes"] == 4_000_000 and 0 < info["bytes"] <= info["max_bytes"]


def test_cli_predict_with_the_cache_writes_the_same_scores(tmp_path, bundle):
    data = tmp_path / "in.csv"
    growing_frame(thread_lines(10)).to_csv(data, index=False)
    for mb in ("0", "8"):
        assert main(["predict", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / f"{mb}.csv"),
                     "--chunk-cache-mb", mb, "--quiet"]) == 0
    assert_same_scores(pd.read_csv(tmp_path / "8.csv"), pd.read_csv(tmp_path / "0.csv"))
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / "x.csv"),
              "--chunk-cache-mb", "-1"])
