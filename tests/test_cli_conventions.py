"""CLI conventions: --version, defaults and examples in --help, argument errors before heavy imports, train --out
refusal and working folder, bundle file modes, predict's summary and --strict, evaluate's label check and strict
metrics.json, export's listing."""
import contextlib
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bsmfusion import strict_json
from bsmfusion.cli import EXAMPLES, build_parser, main
from bsmfusion.data.io import write_table
from tests.helpers import planted_frame, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A folder with cfg.yaml, train/val/test CSVs and a tiny neural bundle `model/` trained through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    cfg = tiny_config("concat", data={"id": "id"}, text={"max_chunks": 2, "chunk_tokens": 16})
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    for name, n, seed in (("train", 48, 0), ("val", 24, 1), ("test", 12, 2)):
        write_table(planted_frame(n, "text", seed), root / f"{name}.csv")
    assert main(["train", "--config", str(root / "cfg.yaml"), "--train", str(root / "train.csv"), "--val",
                 str(root / "val.csv"), "--out", str(root / "model"), "--quiet"]) == 0
    return root


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == "bsmfusion 0.1.0\n"


def test_help_shows_defaults_and_an_example_for_every_verb():
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) == set(EXAMPLES)
    for name, verb in verbs.items():
        text = verb.format_help()
        assert EXAMPLES[name].startswith(f"bsmfusion {name} "), name  # a command line one can run as written
        assert f"example:\n  {EXAMPLES[name].splitlines()[0]}" in text, name
        assert "(default: None)" not in text and "(default: False)" not in text, name
    predict = " ".join(verbs["predict"].format_help().split())
    assert "rows per model batch (default: 64)" in predict and "(default: torch)" in predict
    assert "shuffles the groups (default: 0)" in " ".join(verbs["split"].format_help().split())


def test_argument_errors_answer_before_torch_is_imported(tmp_path):
    """Missing files, a path that is not a bundle, a misspelt --set key and a taken --out fail in one line, without
    importing torch, Lightning or transformers (those take seconds; docs/performance.md has the timings)."""
    (tmp_path / "cfg.yaml").write_text("data: {text: dialogue, numeric: [price]}\n")
    (tmp_path / "t.csv").write_text("id,dialogue,price,label\n1,hi,2,0\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    t, c = str(tmp_path / "t.csv"), str(tmp_path / "cfg.yaml")
    cases = [
        ["predict", "--model", str(tmp_path), "--data", str(tmp_path / "missing.csv"), "--out", "s.csv"],
        ["evaluate", "--model", str(tmp_path), "--data", t, "--out", "r"],
        ["train", "--config", c, "--train", t, "--val", t, "--out", str(tmp_path / "m"), "--set", "model.fusoin=moe"],
        ["train", "--config", c, "--train", t, "--val", t, "--out", str(tmp_path / "taken")],
        ["summary", "--config", c, "--fusion", "sum"],
    ]
    code = ("import json, sys\nfrom bsmfusion.cli import main\n"
            f"codes = [main(argv) for argv in {cases!r}]\n"
            "print(json.dumps([codes, [m for m in ('torch', 'pytorch_lightning', 'transformers') if m in sys.modules]]))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    codes, heavy = json.loads(run.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(cases) and heavy == []
    assert run.stderr.splitlines() == [
        f"error: --data: file '{tmp_path / 'missing.csv'}' does not exist; check the path",
        f"error: --model: '{tmp_path}' is not a bsmfusion bundle (no manifest.json); pass the folder written by "
        "'bsmfusion train --out'",
        "error: --set model.fusoin: unknown config key 'model.fusoin'; did you mean 'model.fusion'?",
        f"error: output folder '{tmp_path / 'taken'}' is not empty; pass --overwrite to replace it, or choose another "
        "folder",
        "error: --fusion model.fusion: config key 'model.fusion': unknown fusion; choose one of concat, cross_attn, gate, "
        "moe, tab_only, text_only, tfidf_lr, gbdt, catboost, ensemble (got 'sum')",
    ]


def test_train_refuses_a_taken_out_unless_overwrite_and_removes_its_working_folder(trained, capsys):
    root = trained
    assert not (root / "model.work").exists()  # checkpoints removed once the bundle is written
    argv = ["train", "--config", str(root / "cfg.yaml"), "--train", str(root / "train.csv"), "--val",
            str(root / "val.csv"), "--quiet", "--set", "model.fusion=tfidf_lr"]
    before = (root / "model" / "manifest.json").read_text()
    assert main([*argv, "--out", str(root / "model")]) == 2
    assert capsys.readouterr().err == (f"error: output folder '{root / 'model'}' holds a bundle; pass --overwrite to "
                                       "replace it, or choose another folder\n")
    assert (root / "model" / "manifest.json").read_text() == before
    shutil.copytree(root / "model", root / "copy")
    assert main([*argv, "--out", str(root / "copy"), "--overwrite"]) == 0
    assert json.loads((root / "copy" / "meta.json").read_text())["kind"] == "tfidf_lr"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(("copy", ".copy"))) == ["copy"]


def test_bundle_files_and_folders_have_the_modes_plain_writes_give(trained):
    bundle = trained / "model"
    modes = {str(p.relative_to(bundle)): stat.S_IMODE(p.stat().st_mode) for p in [bundle, *bundle.rglob("*")]}
    assert "model.safetensors" in modes and "tokenizer" in modes
    for name, mode in modes.items():
        assert mode == (0o755 if (bundle / name).is_dir() else 0o644), (name, oct(mode))


def test_predict_reports_rows_with_errors_and_strict_fails(trained, capsys):
    root = trained
    frame = planted_frame(10, "text", 3).astype({"price": object})
    frame.loc[[2, 5], "price"] = "cheap"
    write_table(frame, root / "bad.csv")
    argv = ["predict", "--model", str(root / "model"), "--data", str(root / "bad.csv"), "--out", str(root / "s.csv"),
            "--quiet", "--overwrite"]  # the same --out three times
    assert main(argv) == 0
    assert capsys.readouterr().out == f"wrote 10 rows to {root / 's.csv'}; 2 with errors (see the 'error' column)\n"
    assert main([*argv, "--strict"]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("wrote 10 rows") and captured.err == (
        f"error: --strict: 2 of 10 rows could not be scored; their reasons are in the 'error' column of {root / 's.csv'}\n")
    assert main([*argv[:4], str(root / "test.csv"), *argv[5:], "--strict"]) == 0
    assert capsys.readouterr().out.endswith("; 0 with errors\n")


def test_evaluate_checks_the_label_column_before_scoring(trained, capsys, monkeypatch):
    from bsmfusion.inference.predictor import Predictor

    root = trained
    write_table(planted_frame(10, "text", 3).drop(columns=["label"]), root / "unlabelled.csv")

    def never(*args, **kwargs):
        raise AssertionError("scored before checking the label column")

    monkeypatch.setattr(Predictor, "score_frame", never)
    assert main(["evaluate", "--model", str(root / "model"), "--data", str(root / "unlabelled.csv"), "--out",
                 str(root / "r")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (f"error: column 'label' is missing from the evaluation data '{root / 'unlabelled.csv'}' (the label "
                   "column, data.label); available columns: id, dialogue, price, ratio, category")


def test_evaluate_on_one_class_writes_strict_json_and_says_why_plots_are_missing(trained):
    root = trained
    write_table(planted_frame(12, "text", 4).assign(label=1), root / "positives.csv")
    out = root / "one_class"
    assert main(["evaluate", "--model", str(root / "model"), "--data", str(root / "positives.csv"), "--out",
                 str(out)]) == 0

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["roc_auc"] is None and metrics["pr_auc"] is None and metrics["positives"] == 12
    assert not (out / "roc.png").exists() and not (out / "pr.png").exists()
    report = (out / "report.md").read_text()
    assert ("Undefined (null in metrics.json): roc_auc, pr_auc; ROC and precision-recall curves skipped: the data "
            "holds one class only (every row is '1')") in report
    assert "| roc_auc | undefined |" in report and "nan" not in report.lower()


def test_export_lists_what_it_wrote_and_the_bundle_size_without_onnxruntime_noise(trained, tmp_path, capsys, caplog,
                                                                                 monkeypatch):
    import bsmfusion.inference.onnx_export as onnx_export

    bundle = tmp_path / "model"
    shutil.copytree(trained / "model", bundle)
    before = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert main(["export", "--model", str(bundle), "--format", "onnx", "--quantize", "int8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    after = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    assert [line.split(" (")[0] for line in lines[:2]] == [f"wrote {bundle / 'model.onnx'}",
                                                          f"wrote {bundle / 'model.int8.onnx'}"]
    assert lines[0].endswith(f"({(bundle / 'model.onnx').stat().st_size / 1e6:,.1f} MB)")
    assert lines[2] == f"bundle {bundle}: {before / 1e6:,.1f} MB → {after / 1e6:,.1f} MB" and len(lines) == 3
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    # without the filter onnxruntime's advice does reach the log: the assertion above can fail
    monkeypatch.setattr(onnx_export, "_quiet_onnxruntime", contextlib.nullcontext)
    onnx_export.export_onnx(bundle, quantize="int8")
    assert [r for r in caplog.records if "pre-processing" in r.getMessage()]


def test_strict_json_turns_non_finite_numbers_into_null():
    value = {"a": float("nan"), "b": [1.5, float("inf"), np.float32("nan")], "c": (np.int64(3), -float("inf")),
             "d": "NaN"}
    assert strict_json.dumps(value, sort_keys=True) == '{"a": null, "b": [1.5, null, null], "c": [3, null], "d": "NaN"}'


def test_an_interrupted_train_names_the_checkpoints_it_keeps_for_resume(trained, tmp_path, capsys, monkeypatch):
    import bsmfusion.workflows.train as fit

    root = trained

    def interrupted(cfg, train, val, out, **kwargs):
        work = Path(out).with_name(Path(out).name + ".work")
        (work / "last").mkdir(parents=True)
        (work / "last" / "last.ckpt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "train", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--config", str(root / "cfg.yaml"), "--train", str(root / "train.csv"), "--val",
                 str(root / "val.csv"), "--out", str(out), "--quiet"]) == 130
    assert capsys.readouterr().err.splitlines() == [
        f"checkpoints kept in {tmp_path / 'run.work'}; rerun the same command with --resume to continue", "interrupted"]


def test_a_failed_ensemble_names_its_neural_members_checkpoints_for_resume(trained, tmp_path, capsys, monkeypatch):
    """An ensemble keeps its neural member's checkpoints in OUT.work/members/neural.work until it is written."""
    import bsmfusion.workflows.train as fit

    root = trained

    def failed(cfg, train, val, out, **kwargs):
        member = Path(out).with_name(Path(out).name + ".work") / "members" / "neural.work"
        (member / "last").mkdir(parents=True)
        (member / "last" / "last.ckpt").write_bytes(b"")
        raise KeyboardInterrupt  # as if a later member failed

    monkeypatch.setattr(fit, "train", failed)
    assert main(["train", "--config", str(root / "cfg.yaml"), "--train", str(root / "train.csv"), "--val",
                 str(root / "val.csv"), "--out", str(tmp_path / "ens"), "--quiet"]) == 130
    assert capsys.readouterr().err.splitlines() == [
        f"checkpoints kept in {tmp_path / 'ens.work' / 'members' / 'neural.work'}; rerun the same command with --resume "
        "to continue", "interrupted"]
