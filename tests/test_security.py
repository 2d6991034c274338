"""Bundles no one can alter unseen (issue 25): a closed manifest, Ed25519 signatures that scoring checks.

Each attack tried on a fresh clone is refused with its one-line message: a changed file, a changed file whose
manifest entry was deleted, a threshold rewritten together with its digest (caught by the signature only), a
manifest emptied to `{}`, a graph dropped into the folder; also an unlisted file (a member folder included), a
renamed file, a truncated manifest, a signature by another key, a forged key id, a borrowed signature file and a
symbolic link. A signed bundle exported (re-signed) still verifies; a signed bundle scores through every entry
point with its verify key (CLI predict and evaluate, Python, serve, Ray). Also: keys, `verify` exit codes, rotation,
the once-only note when no key is given, and the float64 `prob_*` columns / non-finite HTTP records (item 4).
"""
import json
import logging
import shutil
import stat

import numpy as np
import pandas as pd
import pytest

import bsmfusion
from bsmfusion.manifest import sha256_file
from bsmfusion.cli import main
from bsmfusion.errors import BundleError, OptionError
from bsmfusion.manifest import MANIFEST, SIGNATURE, check_manifest, read_signature
from bsmfusion.signing import generate
from bsmfusion.workflows.train import train
from tests.helpers import make_frame, random_bundle, tiny_config


# ----------------------------------------------------------------------------------------------- fixtures
class Keys:
    def __init__(self, folder):
        self.private, self.public, self.id = generate(folder)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return Keys(root / "a"), Keys(root / "b")


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys):
    """A neural bundle signed by key a when it was written."""
    return random_bundle(tmp_path_factory.mktemp("signed") / "model", sign_key=keys[0].private)


@pytest.fixture
def clone(signed, tmp_path):
    """A fresh copy of the signed bundle, for one attack."""
    copy = tmp_path / "clone"
    shutil.copytree(signed, copy)
    return copy


def rewrite_manifest(folder, change):
    manifest = json.loads((folder / MANIFEST).read_text())
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def flip_a_byte(path, at=4096):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def refused(folder, match, verify_key=None):
    """Loading `folder` is refused with `match`, and `bsmfusion verify` says the same and exits 1."""
    with pytest.raises(BundleError, match=match) as info:
        bsmfusion.load(folder, verify_key=verify_key)
    assert "\n" not in str(info.value)
    argv = ["verify", "--model", str(folder)] + (["--verify-key", str(verify_key)] if verify_key else [])
    assert main(argv) == 1


# ----------------------------------------------------------------------------------------------- the attacks
def test_a_flipped_byte_in_the_weights_is_refused(clone, keys):
    flip_a_byte(clone / "model.safetensors")
    refused(clone, "file 'model.safetensors' does not match its SHA-256 in manifest.json")


def test_a_flipped_byte_whose_manifest_entry_was_deleted_is_an_unlisted_file(clone, keys):
    flip_a_byte(clone / "model.safetensors")
    rewrite_manifest(clone, lambda m: m.pop("model.safetensors"))
    refused(clone, r"file 'model.safetensors' is not listed in manifest.json \(added after the bundle was written\)")
    refused(clone, "is not listed in manifest.json", verify_key=keys[0].public)


def test_a_threshold_rewritten_with_its_digest_is_caught_by_the_signature(clone, keys, caplog):
    meta = json.loads((clone / "meta.json").read_text())
    (clone / "meta.json").write_text(json.dumps({**meta, "threshold": 0.999}))
    rewrite_manifest(clone, lambda m: m.update({"meta.json": sha256_file(clone / "meta.json")}))
    # a checksum list the attacker rewrites stops accidents, not people: only the signature tells
    with caplog.at_level(logging.WARNING, logger="bsmfusion.bundle"):
        assert bsmfusion.load(clone).threshold == 0.999
    assert "its signature was not checked" in caplog.text
    refused(clone, rf"bundle '{clone}': the signature \(key {keys[0].id}, .*\) does not match its manifest.json: the "
                   "bundle was changed after it was signed; refusing to load it", verify_key=keys[0].public)


def test_new_weights_under_an_empty_manifest_are_refused(clone):
    flip_a_byte(clone / "model.safetensors")
    (clone / MANIFEST).write_text("{}")
    refused(clone, r"file '[^']+' is not listed in manifest.json")


def test_a_graph_dropped_into_the_folder_is_refused_whatever_the_engine(clone, signed):
    (clone / "model.int8.onnx").write_bytes(b"not the bundle's graph")
    for engine in ("torch", "auto"):
        with pytest.raises(BundleError, match="file 'model.int8.onnx' is not listed in manifest.json"):
            bsmfusion.load(clone, engine=engine)


def test_an_unlisted_file_in_a_subfolder_is_refused(clone):
    (clone / "tokenizer" / "added_tokens.json").write_text("{}")
    refused(clone, "file 'tokenizer/added_tokens.json' is not listed in manifest.json")


def test_a_renamed_file_is_missing(clone):
    (clone / "model.safetensors").rename(clone / "model.old.safetensors")
    refused(clone, "file 'model.safetensors' is missing; re-train or copy the whole bundle folder")


def test_a_truncated_or_wrong_manifest_is_refused(clone):
    text = (clone / MANIFEST).read_text()
    (clone / MANIFEST).write_text(text[: len(text) // 2])
    refused(clone, r"manifest.json does not parse \(.*\); it was damaged or altered: copy the bundle again")
    (clone / MANIFEST).write_text(json.dumps(sorted(json.loads(text))))
    refused(clone, "manifest.json holds a JSON list, not an object of file name → SHA-256")
    (clone / MANIFEST).write_text(json.dumps({**json.loads(text), "../outside.json": "0" * 64}))
    refused(clone, "manifest.json lists '../outside.json', which is not a file name inside the bundle")
    (clone / MANIFEST).write_text(text.replace('"meta.json": "', '"meta.json": "x', 1))
    refused(clone, "manifest.json gives 'meta.json' the digest 'x[0-9a-f]+', not a SHA-256")
    (clone / MANIFEST).unlink()
    refused(clone, r"is not a bsmfusion bundle \(no manifest.json\)")


def test_a_symbolic_link_is_refused(clone, tmp_path):
    target = tmp_path / "weights.safetensors"
    shutil.move(clone / "model.safetensors", target)
    (clone / "model.safetensors").symlink_to(target)
    refused(clone, "'model.safetensors' is a symbolic link or not a plain file; a bundle holds plain files only")


def test_a_signature_by_another_key_is_refused(keys, tmp_path):
    a, b = keys
    other = random_bundle(tmp_path / "other", sign_key=b.private)
    refused(other, rf"bundle '{other}' is signed by key {b.id}, not by the verify key \({a.id}\); pass the public key "
                   rf"of {b.id}, or have the bundle re-signed with yours", verify_key=a.public)
    # a forged key id changes nothing: the signature is still b's
    record = json.loads((other / SIGNATURE).read_text())
    (other / SIGNATURE).write_text(json.dumps({**record, "key_id": a.id}))
    refused(other, "the signature .* does not match its manifest.json", verify_key=a.public)


def test_a_signature_borrowed_from_another_bundle_is_refused(clone, keys, tmp_path):
    other = random_bundle(tmp_path / "other")
    (other / "meta.json").write_text((other / "meta.json").read_text().replace('"threshold": 0.5', '"threshold": 0.9'))
    rewrite_manifest(other, lambda m: m.update({"meta.json": sha256_file(other / "meta.json")}))
    shutil.copy(clone / SIGNATURE, other / SIGNATURE)
    refused(other, "the signature .* does not match its manifest.json", verify_key=keys[0].public)


def test_an_unsigned_bundle_or_a_damaged_signature_is_refused_with_a_verify_key(keys, tmp_path):
    plain = random_bundle(tmp_path / "plain")
    refused(plain, rf"bundle '{plain}' is not signed, and a verify key \({keys[0].id}\) requires a signature; sign it "
                   rf"where it was built: 'bsmfusion sign --model {plain} --sign-key private.pem'",
            verify_key=keys[0].public)
    (plain / SIGNATURE).write_text('{"algorithm": "Ed25519"')
    refused(plain, rf"{SIGNATURE} is damaged")


def test_the_verify_key_may_come_from_the_environment_or_as_pem_text(signed, keys, tmp_path, monkeypatch):
    plain = random_bundle(tmp_path / "plain")
    monkeypatch.setenv("BSMFUSION_VERIFY_KEY", str(keys[0].public))
    with pytest.raises(BundleError, match="is not signed"):
        bsmfusion.load(plain)
    assert bsmfusion.load(signed).threshold == 0.5
    monkeypatch.setenv("BSMFUSION_VERIFY_KEY", keys[1].public.read_text())
    with pytest.raises(BundleError, match=f"not by the verify key \\({keys[1].id}\\)"):
        bsmfusion.load(signed)
    monkeypatch.setenv("BSMFUSION_VERIFY_KEY", str(tmp_path / "nope.pem"))
    with pytest.raises(OptionError, match=r"^BSMFUSION_VERIFY_KEY '.*nope.pem': no such file"):
        bsmfusion.load(signed)


def test_bad_keys_are_one_line_errors_naming_the_option(signed, keys, tmp_path, capsys):
    with pytest.raises(OptionError, match=r"^verify_key '.*private.pem' is a private key; pass its public half"):
        bsmfusion.load(signed, verify_key=keys[0].private)
    (tmp_path / "junk.pem").write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    with pytest.raises(OptionError, match=r"^verify_key '.*junk.pem' is not a PEM public key"):
        bsmfusion.load(signed, verify_key=tmp_path / "junk.pem")
    data = tmp_path / "rows.csv"
    make_frame(4).to_csv(data, index=False)
    argv = ["predict", "--model", str(signed), "--data", str(data), "--out", str(tmp_path / "o.csv"), "--quiet"]
    assert main([*argv, "--verify-key", str(tmp_path / "missing.pem")]) == 2
    assert capsys.readouterr().err == (f"error: --verify-key '{tmp_path / 'missing.pem'}': no such file; pass the public "
                                       "key file 'bsmfusion keygen' wrote (public.pem)\n")


# ----------------------------------------------------------------------------------------------- keys, sign, verify
def test_keygen_writes_a_0600_private_key_and_never_replaces_one(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    out = capsys.readouterr().out
    private, public = tmp_path / "k" / "private.pem", tmp_path / "k" / "public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert out.startswith("key ") and str(private) in out
    before = private.read_bytes()
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 2
    assert "already holds private.pem; keep that key" in capsys.readouterr().err
    assert private.read_bytes() == before


def test_verify_exit_codes_and_its_one_line(signed, keys, tmp_path, capsys):
    assert main(["verify", "--model", str(signed), "--verify-key", str(keys[0].public)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: bundle {signed}: ") and f"signed by key {keys[0].id}" in out
    assert "signature verified" in out and out.count("\n") == 1
    assert main(["verify", "--model", str(signed)]) == 0
    assert "signature not checked: no verify key" in capsys.readouterr().out
    assert main(["verify", "--model", str(signed), "--verify-key", str(keys[1].public)]) == 1
    assert capsys.readouterr().err.startswith(f"FAILED: bundle '{signed}' is signed by key {keys[0].id}")
    assert main(["verify", "--model", str(tmp_path / "nope")]) == 2


def test_rotation_re_signs_only_what_the_old_key_vouches_for(clone, keys, tmp_path, capsys):
    a, b = keys
    assert main(["sign", "--model", str(clone), "--sign-key", str(b.private)]) == 2  # signed by a: b cannot take over
    assert "pass the old public key to check first" in capsys.readouterr().err
    assert main(["sign", "--model", str(clone), "--sign-key", str(b.private), "--verify-key", str(a.public)]) == 0
    assert read_signature(clone)["key_id"] == b.id
    assert bsmfusion.load(clone, verify_key=b.public).threshold == 0.5
    refused(clone, f"signed by key {b.id}, not by the verify key", verify_key=a.public)
    # a bundle altered after signing is not laundered by re-signing it
    (clone / "metrics.json").write_text('{"validation": {"f1": 1.0}}')
    rewrite_manifest(clone, lambda m: m.update({"metrics.json": sha256_file(clone / "metrics.json")}))
    assert main(["sign", "--model", str(clone), "--sign-key", str(b.private)]) == 2
    assert "the bundle was changed after it was signed" in capsys.readouterr().err


def test_a_copy_made_with_save_still_verifies(signed, keys, tmp_path):
    copy = bsmfusion.load(signed, verify_key=keys[0].public).save(tmp_path / "copy")
    assert bsmfusion.load(copy, verify_key=keys[0].public).threshold == 0.5


def test_without_a_verify_key_the_unchecked_signature_is_said_once_per_bundle(keys, tmp_path, caplog):
    plain = random_bundle(tmp_path / "plain")
    with caplog.at_level(logging.WARNING, logger="bsmfusion.bundle"):
        for _ in range(3):
            bsmfusion.load(plain)
    notes = [r.getMessage() for r in caplog.records if "signature was not checked" in r.getMessage()]
    assert notes == [f"bundle '{plain}' (unsigned): its signature was not checked; pass --verify-key (Python: "
                     "verify_key=) or set BSMFUSION_VERIFY_KEY to refuse unsigned or altered bundles"]


# ----------------------------------------------------------------------------------------------- export re-signs
@pytest.mark.slow
def test_a_signed_bundle_exported_is_re_signed_and_still_verifies(clone, keys, capsys):
    pytest.importorskip("onnxruntime")
    a, b = keys
    before = (clone / MANIFEST).read_text()
    assert main(["export", "--model", str(clone), "--format", "onnx"]) == 2  # no key: it would break the signature
    assert capsys.readouterr().err == (f"error: bundle '{clone}' is signed; export rewrites its manifest, so pass "
                                       "--sign-key (or set BSMFUSION_SIGN_KEY) to re-sign it\n")
    assert main(["export", "--model", str(clone), "--sign-key", str(b.private)]) == 2  # another key: not laundered
    assert f"is signed by key {a.id}, not by the sign key ({b.id})" in capsys.readouterr().err
    assert (clone / MANIFEST).read_text() == before and not (clone / "model.onnx").exists()
    assert sorted(p.name for p in clone.parent.iterdir() if p.name.startswith(".")) == []  # no staging left
    assert main(["export", "--model", str(clone), "--sign-key", str(a.private), "--quantize", "int8"]) == 0
    assert f"signed by key {a.id}" in capsys.readouterr().out
    assert {"model.onnx", "model.int8.onnx"} <= set(check_manifest(clone))
    predictor = bsmfusion.load(clone, verify_key=a.public, engine="onnx")
    assert predictor.predict_frame(make_frame(6))["error"].eq("").all()


# ----------------------------------------------------------------------------------------------- every entry point
def test_a_signed_bundle_scores_with_its_verify_key_in_cli_predict_and_evaluate(signed, keys, tmp_path, capsys):
    data = tmp_path / "rows.csv"
    make_frame(12, seed=3).to_csv(data, index=False)
    key = ["--verify-key", str(keys[0].public)]
    assert main(["predict", "--model", str(signed), "--data", str(data), "--out", str(tmp_path / "s.csv"), "--quiet",
                 *key]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv")) == 12
    assert main(["evaluate", "--model", str(signed), "--data", str(data), "--out", str(tmp_path / "report"), *key]) == 0
    assert (tmp_path / "report" / "report.md").is_file() and not (signed / "report").exists()
    check_manifest(signed)  # evaluating wrote nothing into the bundle
    assert main(["predict", "--model", str(signed), "--data", str(data), "--out", str(tmp_path / "t.csv"), "--quiet",
                 "--verify-key", str(keys[1].public)]) == 2
    assert "not by the verify key" in capsys.readouterr().err


def test_a_signed_bundle_is_served_with_its_verify_key_and_refused_without_its_signer(signed, keys, monkeypatch,
                                                                                        capsys):
    from fastapi.testclient import TestClient

    from bsmfusion.serving import app as server

    with TestClient(server.create_app(bsmfusion.load(signed, verify_key=keys[0].public))) as client:
        record = make_frame(2).drop(columns="label").to_dict("records")[1]  # row 0's price is NaN
        assert client.post("/v1/predict", json=record).json()["results"][0]["error"] is None
    started = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: started.append(app))
    assert main(["serve", "--model", str(signed), "--verify-key", str(keys[0].public)]) == 0 and len(started) == 1
    assert main(["serve", "--model", str(signed), "--verify-key", str(keys[1].public)]) == 2 and len(started) == 1
    assert "not by the verify key" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray's own DataContext deprecations
def test_a_signed_bundle_scores_on_ray_actors_with_its_verify_key(ray_local, signed, keys, tmp_path, capsys):
    frame = make_frame(24, seed=4)
    local = bsmfusion.load(signed).predict_frame(frame)
    scores = bsmfusion.ray_predict(frame, signed, verify_key=keys[0].public, actors=1, batch_rows=8).to_pandas()
    assert sorted(scores["id"]) == sorted(local["id"])
    merged = scores.merge(local, on="id", suffixes=("", "_local"))
    np.testing.assert_allclose(merged["prob_1"], merged["prob_1_local"], atol=1e-6, rtol=0)
    with pytest.raises(BundleError, match="not by the verify key"):  # on the driver, before any actor starts
        bsmfusion.ray_predict(frame, signed, verify_key=keys[1].public, actors=1)
    data = tmp_path / "rows.csv"
    frame.to_csv(data, index=False)
    assert main(["predict", "--model", str(signed), "--data", str(data), "--out", str(tmp_path / "ray"), "--ray",
                 "--ray-actors", "1", "--quiet", "--verify-key", str(keys[0].public)]) == 0
    assert len(pd.read_parquet(tmp_path / "ray")) == 24


# ----------------------------------------------------------------------------------------------- training signs
@pytest.mark.slow
def test_train_signs_with_the_flag_or_the_environment_and_checks_the_key_first(keys, tmp_path, monkeypatch, capsys):
    from tests.helpers import classical_config, planted

    cfg = classical_config("tfidf_lr")
    (tmp_path / "cfg.yaml").write_text(json.dumps(cfg.to_dict()))
    planted(80, "text", 0).to_csv(tmp_path / "train.csv", index=False)
    planted(40, "text", 1).to_csv(tmp_path / "val.csv", index=False)
    argv = ["train", "--config", str(tmp_path / "cfg.yaml"), "--train", str(tmp_path / "train.csv"), "--val",
            str(tmp_path / "val.csv"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "m"), "--sign-key", str(keys[0].public)]) == 2
    assert "error: --sign-key" in capsys.readouterr().err and not (tmp_path / "m").exists()  # before training
    assert main([*argv, "--out", str(tmp_path / "m"), "--sign-key", str(keys[0].private)]) == 0
    assert f"signed by key {keys[0].id}" in capsys.readouterr().out
    assert bsmfusion.load(tmp_path / "m", verify_key=keys[0].public).bundle.kind == "tfidf_lr"
    monkeypatch.setenv("BSMFUSION_SIGN_KEY", keys[1].private.read_text())  # PEM text, as a CI secret holds it
    predictor = bsmfusion.train(cfg, planted(80, "text", 0), planted(40, "text", 1), tmp_path / "n", progress=False)
    assert read_signature(predictor.path)["key_id"] == keys[1].id


@pytest.fixture(scope="module")
def signed_ensemble(tmp_path_factory, keys):
    cfg = tiny_config("ensemble", data={"id": "id"}, text={"max_chunks": 3, "chunk_tokens": 16, "pooling": "mean"},
                      train={"epochs": 1, "precision": "fp32", "patience": 5})
    cfg.model.ensemble.neural = "gate"
    cfg.model.ensemble.members = ["neural", "tfidf_lr"]
    cfg.model.ensemble.member_cv_folds = 2
    out = tmp_path_factory.mktemp("ens") / "model"
    train(cfg, make_frame(80, seed=0), make_frame(60, seed=1), out, progress=False, sign_key=keys[0].private)
    return out


@pytest.mark.slow
def test_an_ensemble_is_signed_members_included_and_its_member_folders_are_closed(signed_ensemble, keys, tmp_path):
    for folder in (signed_ensemble, *(signed_ensemble / "members").iterdir()):
        assert read_signature(folder)["key_id"] == keys[0].id
    assert f"members/neural/{SIGNATURE}" in json.loads((signed_ensemble / MANIFEST).read_text())
    copy = tmp_path / "ens"
    shutil.copytree(signed_ensemble, copy)
    (copy / "members" / "neural" / "model.int8.onnx").write_bytes(b"dropped in")
    refused(copy, "file 'members/neural/model.int8.onnx' is not listed in manifest.json", verify_key=keys[0].public)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
def test_a_signed_ensemble_of_the_defaults_shape_scores_in_predict_serve_and_ray(ray_local, signed_ensemble, keys,
                                                                                   tmp_path, monkeypatch):
    from fastapi.testclient import TestClient


    frame = make_frame(16, seed=7)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    key = str(keys[0].public)
    assert main(["predict", "--model", str(signed_ensemble), "--data", str(tmp_path / "rows.csv"), "--out",
                 str(tmp_path / "local.csv"), "--quiet", "--verify-key", key]) == 0
    local = pd.read_csv(tmp_path / "local.csv")
    apps = []
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: apps.append(app))
    assert main(["serve", "--model", str(signed_ensemble), "--verify-key", key]) == 0
    with TestClient(apps[0]) as client:
        served = client.post("/v1/predict", json={"records": frame.iloc[[1, 2]].drop(columns="label")
                                                  .to_dict("records")}).json()["results"]
    assert [r["id"] for r in served] == ["r1", "r2"]
    np.testing.assert_allclose([r["probabilities"]["1"] for r in served], local["prob_1"].iloc[[1, 2]], atol=1e-6)
    assert main(["predict", "--model", str(signed_ensemble), "--data", str(tmp_path / "rows.csv"), "--out",
                 str(tmp_path / "ray"), "--ray", "--ray-actors", "1", "--quiet", "--verify-key", key]) == 0
    merged = pd.read_parquet(tmp_path / "ray").merge(local, on="id", suffixes=("", "_local"))
    assert len(merged) == 16
    np.testing.assert_allclose(merged["prob_1"], merged["prob_1_local"], atol=1e-6)


@pytest.mark.slow
def test_an_exported_signed_ensemble_keeps_both_manifests_closed_and_signed(signed_ensemble, keys, tmp_path):
    pytest.importorskip("onnxruntime")
    copy = tmp_path / "ens"
    shutil.copytree(signed_ensemble, copy)
    assert main(["export", "--model", str(copy), "--sign-key", str(keys[0].private)]) == 0
    member = copy / "members" / "neural"
    assert "model.onnx" in check_manifest(member) and "members/neural/model.onnx" in check_manifest(copy)
    assert main(["verify", "--model", str(member), "--verify-key", str(keys[0].public)]) == 0
    frame = make_frame(8, seed=2)
    onnx = bsmfusion.load(copy, verify_key=keys[0].public, engine="onnx").predict_frame(frame)
    torch_out = bsmfusion.load(copy, verify_key=keys[0].public).predict_frame(frame)
    np.testing.assert_allclose(onnx["prob_1"], torch_out["prob_1"], atol=1e-4)


# ----------------------------------------------------------------------------------------------- item 4
def test_written_probabilities_are_the_ones_the_decision_compared(signed, tmp_path):
    frame = make_frame(40, seed=6)
    probs = bsmfusion.load(signed).predict_frame(frame)["prob_1"].to_numpy()
    assert probs.dtype == np.float64
    threshold = float(np.sort(probs)[20])  # a threshold exactly on a score: float32 rounding would cross it
    predictor = bsmfusion.load(signed, threshold=threshold)
    frame.to_csv(tmp_path / "rows.csv", index=False)
    predictor.predict_file(tmp_path / "rows.csv", tmp_path / "scores.csv", progress=False)
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert ((scores["prob_1"] >= threshold) == (scores["predicted_label"].astype(str) == "1")).all()
    assert (scores["prob_1"] == threshold).sum() >= 1


@pytest.mark.parametrize("raw, shown", [("NaN", "NaN"), ("Infinity", "infinite"), ("-Infinity", "infinite"),
                                        ("1e999", "infinite")])
def test_the_server_refuses_non_finite_numbers_naming_record_and_field(signed, raw, shown):
    from fastapi.testclient import TestClient

    from bsmfusion.serving.app import create_app

    good = make_frame(3).drop(columns="label").to_dict("records")[1:]  # finite (make_frame's row 0 has price NaN)
    body = json.dumps({"records": good}).replace('"ratio": ' + json.dumps(good[1]["ratio"]), f'"ratio": {raw}')
    with TestClient(create_app(bsmfusion.load(signed))) as client:
        response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"record 1, field 'ratio' is {shown}")
