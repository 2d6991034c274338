"""Progress you can follow in a log: with stderr redirected, train, evaluate and predict write plain lines every
`--log-every` seconds with what is done of the total, the rate and the ETA (train: epoch and validation metric);
a terminal gets a live bar."""
import contextlib
import io
import re

import pandas as pd
import pytest

import bsmfusion
from bsmfusion.cli import main
from bsmfusion.data.io import count_rows, write_table
from bsmfusion.progress import Progress, advance, format_duration
from bsmfusion.workflows.train import train
from tests.helpers import fast_config, planted_frame

RATE = r"[\d,]+\.\d"
DURATION = r"\d+(?:h \d\dm|m \d\ds|s)"


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def trained_with_log(tmp_path_factory):
    """A tiny gate model trained with progress on and stderr redirected to a buffer (not a terminal)."""
    out = tmp_path_factory.mktemp("progress") / "model"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        train(fast_config("gate", epochs=2), planted_frame(160, "text", 0), planted_frame(64, "text", 1), out,
              progress=True, log_every=0)
    return out, stderr.getvalue()


def test_plain_lines_every_interval_with_done_total_rate_and_eta():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress("predict", 1000, stream=stream, log_every=30, clock=clock)
    assert not progress.interactive  # a StringIO is not a terminal
    with progress:
        for _ in range(10):
            clock.now += 5
            advance(50)  # reaches the running Progress without being handed it
    lines = stream.getvalue().splitlines()
    # 50 s for 500 rows: one line at 30 s (300 rows), none at 35-50 s, and the last one when the block ends
    assert lines == ["predict: 300/1,000 rows (30%), 10.0 rows/s, ETA 1m 10s",
                     "predict: 500/1,000 rows (50%), 10.0 rows/s, took 50s"]
    advance(10)  # outside the block: nothing is running, nothing happens
    assert progress.done == 500


def test_training_fields_and_a_resumed_count():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress("train", 120, unit="steps", rate_unit="samples", stream=stream, log_every=0, clock=clock,
                        done=40)  # resumed at step 40: the rate and ETA count this run's steps only
    progress.lead, progress.tail = "epoch 2/3", "val_roc_auc 0.8123"
    clock.now += 8
    progress.update(44, items=64)
    assert stream.getvalue() == "train: epoch 2/3, 44/120 steps (37%), 8.0 samples/s, ETA 2m 32s, val_roc_auc 0.8123\n"


def test_terminal_gets_a_bar_redrawn_in_place_and_disabled_writes_nothing():
    clock, stream = FakeClock(), io.StringIO()
    with Progress("evaluate", 200, stream=stream, interactive=True, clock=clock) as progress:
        clock.now += 1
        progress.advance(100)
    text = stream.getvalue()
    assert text.startswith("\revaluate [############............] 100/200 rows (50%), 100.0 rows/s, ETA 1s")
    assert text.endswith("\revaluate [############............] 100/200 rows (50%), 100.0 rows/s, took 1s\n")
    assert "\n" not in text[:-1]
    quiet = io.StringIO()
    with Progress("predict", 10, stream=quiet, log_every=0, enabled=False):
        advance(5)
    assert quiet.getvalue() == ""
    assert [format_duration(s) for s in (7, 245, 7380)] == ["7s", "4m 05s", "2h 03m"]


def test_train_writes_epoch_steps_rate_eta_and_validation_metric(trained_with_log):
    _, log = trained_with_log
    lines = [line for line in log.splitlines() if line.startswith("train: ")]
    # 160 rows / batch 16 = 10 steps per epoch, 2 epochs; log_every 0: a line per step, one per validation, a last
    step = re.compile(rf"^train: epoch [12]/2, (\d+)/20 steps \(\d+%\), {RATE} samples/s, ETA {DURATION}"
                      r"(, val_roc_auc \d\.\d{4})?$")
    assert all(step.match(line) for line in lines[:-1]), lines
    assert [int(step.match(line).group(1)) for line in lines[:10]] == list(range(1, 11))
    assert any("epoch 2/2" in line and "val_roc_auc" in line for line in lines)  # epoch 1's validation, shown on
    assert re.match(rf"^train: epoch 2/2, 20/20 steps \(100%\), {RATE} samples/s, took {DURATION}, "
                    r"val_roc_auc \d\.\d{4}$", lines[-1]), lines[-1]
    assert "\r" not in log  # no terminal bar frames in a log


def test_predict_file_lines_have_rows_done_of_total_rate_and_eta(trained_with_log, tmp_path, capsys):
    model, _ = trained_with_log
    frame = planted_frame(150, "text", 2)
    frame["price"] = frame["price"].astype(object)
    frame.loc[3, "price"] = "twelve"  # not scored: counted as done, and named in the last line
    write_table(frame, tmp_path / "in.csv")
    predictor = bsmfusion.load(model, batch_size=32)
    summary = predictor.predict_file(tmp_path / "in.csv", tmp_path / "out.csv", batch_rows=100, log_every=0)
    assert summary == (150, 1)
    lines = capsys.readouterr().err.splitlines()
    line = re.compile(rf"^predict: ([\d,]+)/150 rows \(\d+%\), {RATE} rows/s, ETA {DURATION}(, 1 row with errors)?$")
    done = [int(line.match(text).group(1)) for text in lines[:-1]]
    # log_every 0: a line for every scoring batch (≤ 32 rows), not only per file frame of 100 rows; the unscored
    # row counts when its frame is written
    assert done == sorted(set(done)) and done[-1] == 150 and 100 in done and len(done) >= 6, done
    assert max(b - a for a, b in zip([0, *done], done)) <= 32
    assert re.match(rf"^predict: 150/150 rows \(100%\), {RATE} rows/s, took {DURATION}, 1 row with errors$",
                    lines[-1]), lines[-1]


def test_cli_evaluate_and_predict_take_log_every(trained_with_log, tmp_path, capsys):
    model, _ = trained_with_log
    write_table(planted_frame(40, "text", 3), tmp_path / "test.csv")
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "test.csv"), "--out",
                 str(tmp_path / "rep"), "--batch-size", "16", "--log-every", "0"]) == 0
    err = capsys.readouterr().err
    assert re.search(rf"^evaluate: (8|16)/40 rows \(\d+%\), {RATE} rows/s, ETA {DURATION}$", err, re.M), err
    assert re.search(rf"^evaluate: 40/40 rows \(100%\), {RATE} rows/s, took {DURATION}$", err, re.M), err
    assert main(["predict", "--model", str(model), "--data", str(tmp_path / "test.csv"), "--out",
                 str(tmp_path / "scores.csv"), "--log-every", "3600"]) == 0
    lines = re.findall(r"^predict: .*$", capsys.readouterr().err, re.M)
    assert len(lines) == 1 and lines[0].startswith("predict: 40/40 rows (100%)") and "took" in lines[0], lines
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--model", str(model), "--data", str(tmp_path / "test.csv"), "--out", "x.csv",
              "--log-every", "-5"])
    assert exit_info.value.code == 2
    assert "--log-every: '-5' is not a number of seconds >= 0" in capsys.readouterr().err


def test_train_uses_lightnings_bar_on_a_terminal_and_lines_elsewhere(tmp_path, monkeypatch):
    from bsmfusion.training import progress as training_progress
    from bsmfusion.training.fit import build_trainer
    from bsmfusion.training.progress import LogProgress

    cfg = fast_config("concat")
    for terminal, bar, lines in ((True, True, False), (False, False, True)):
        monkeypatch.setattr(training_progress, "use_terminal_bar", lambda terminal=terminal: terminal)
        trainer, *_ = build_trainer(cfg, tmp_path / "work", 10, progress=True, log_every=5)
        assert (trainer.progress_bar_callback is not None) == bar
        found = [c for c in trainer.callbacks if isinstance(c, LogProgress)]
        assert bool(found) == lines and all(c.log_every == 5 and c.monitor == "val_roc_auc" for c in found)
    trainer, *_ = build_trainer(cfg, tmp_path / "work", 10, progress=False)  # --quiet: neither
    assert trainer.progress_bar_callback is None and not any(isinstance(c, LogProgress) for c in trainer.callbacks)


def test_count_rows_reads_quoted_newlines_parquet_and_jsonl(tmp_path):
    frame = pd.DataFrame({"dialogue": ["BUYER: hi\nSELLER: hello", "one line", "a\n\nb"], "x": [1, 2, 3]})
    for name in ("t.csv", "t.parquet", "t.jsonl"):
        write_table(frame, tmp_path / name)
        assert count_rows(tmp_path / name) == 3, name
