"""Progress you can follow anywhere: a live bar on a terminal, and, when the output goes to a file (nohup, CI,
SLURM), one plain line every `log_every` seconds plus a last one at the end, e.g.

    predict: 4,096/10,000 rows (41%), 22.1 rows/s, ETA 4m 27s
    train: epoch 2/3, 85/120 steps (71%), 31.2 samples/s, ETA 1m 12s, val_roc_auc 0.8123

One class serves `train` (through the Lightning callback `training.progress.LogProgress`), `evaluate` and
`predict`. Scoring reports without being handed the object: `models.scores.score_table` calls `advance(rows)`,
which moves the `Progress` whose `with` block is running (none: nothing happens, e.g. in the server). Only the
standard library is imported here.
"""
from __future__ import annotations

import contextvars
import sys
import time
from typing import Callable, TextIO

DEFAULT_LOG_EVERY = 30.0  # seconds between two plain lines (`--log-every`)
BAR_REFRESH = 0.2  # seconds between two redraws of the terminal bar
BAR_WIDTH = 24

_ACTIVE: contextvars.ContextVar["Progress | None"] = contextvars.ContextVar("bsmfusion_progress", default=None)


def is_terminal(stream) -> bool:
    """Whether `stream` is an interactive terminal (False for files, pipes, closed or odd streams)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (ValueError, OSError):
        return False


def format_duration(seconds: float) -> str:
    """`7s`, `4m 05s`, `2h 03m`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def check_log_every(value: float) -> float:
    """`--log-every`: seconds >= 0 (0 = a line at every update)."""
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"log_every must be a number of seconds >= 0 (0 = a line at every update), got {value}")
    return value


class muted:
    """`with muted():` inner code moves no `Progress` (an ensemble's members each score the same rows; the ensemble
    advances once for them)."""

    def __enter__(self) -> "muted":
        self._token = _ACTIVE.set(None)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.reset(self._token)


def advance(n: int, items: int | None = None) -> None:
    """Move the active `Progress` (the innermost running `with progress:` block) by `n`; no-op without one."""
    current = _ACTIVE.get()
    if current is not None:
        current.advance(n, items)


class Progress:
    """Counts `done` of `total` units (`unit`: rows, steps) and shows it.

    Args:
        label: what runs, the line's first word (`predict`, `evaluate`, `train`).
        total: units to do; None or 0 when unknown (no percentage, no ETA).
        unit: what `done` counts.
        rate_unit: what the rate counts (`samples` for training, whose unit is optimiser steps); default `unit`.
            `advance(n, items)` adds `items` to it (default `n`).
        stream: where to write; default `sys.stderr`.
        log_every: seconds between two plain lines when the stream is not a terminal.
        interactive: force the terminal bar (True) or plain lines (False); default: whether `stream` is a terminal.
        enabled: False writes nothing (and `advance` reaches nothing), so callers need no second code path.
        done: units already done (a resumed run): the rate and ETA count only what this run does.
        clock: seconds, monotonic (tests pass a fake one).

    `lead` and `tail` are free text shown before the count and after the ETA (`epoch 2/3`, `val_roc_auc 0.81`).
    """

    def __init__(self, label: str, total: int | None, *, unit: str = "rows", rate_unit: str | None = None,
                 stream: TextIO | None = None, log_every: float = DEFAULT_LOG_EVERY, interactive: bool | None = None,
                 enabled: bool = True, done: int = 0, clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.total = int(total) if total and total != float("inf") else None
        self.unit = unit
        self.rate_unit = rate_unit or unit
        self.stream = stream if stream is not None else sys.stderr
        self.log_every = check_log_every(log_every)
        self.interactive = is_terminal(self.stream) if interactive is None else interactive
        self.enabled = enabled
        self.clock = clock
        self.done = int(done)
        self.items = 0
        self.lead = ""
        self.tail = ""
        self._start_done = int(done)
        self._started = clock()
        self._last_write = self._started
        self._token: contextvars.Token | None = None
        self._drawn = 0  # width of the terminal line last drawn
        self._closed = False

    # ------------------------------------------------------------------ counting
    def advance(self, n: int, items: int | None = None) -> None:
        """`n` more units done (`items` more for the rate; default `n`)."""
        self.update(self.done + int(n), items=int(n) if items is None else items)

    def update(self, done: int, *, items: int | None = None) -> None:
        """Set the count to `done` (capped at `total`), add `items` to the rate's count (default: the units
        added), and, when the count moved, write a line or redraw the bar if it is time."""
        done = max(min(int(done), self.total) if self.total else int(done), self._start_done)
        self.items += max(0, done - self.done) if items is None else int(items)
        moved, self.done = done != self.done, done
        if not self.enabled or not moved:
            return
        now = self.clock()
        if now - self._last_write >= (BAR_REFRESH if self.interactive else self.log_every):
            self.write(now)

    # ------------------------------------------------------------------ text
    def elapsed(self, now: float | None = None) -> float:
        return max((self.clock() if now is None else now) - self._started, 0.0)

    def rate(self, now: float | None = None) -> float | None:
        """`rate_unit` per second since the start; None before anything was done."""
        elapsed = self.elapsed(now)
        return self.items / elapsed if self.items and elapsed > 0 else None

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at this run's pace; None when the total or the pace is unknown."""
        progressed = self.done - self._start_done
        elapsed = self.elapsed(now)
        if not self.total or progressed <= 0 or elapsed <= 0:
            return None
        return (self.total - self.done) * elapsed / progressed

    def line(self, now: float | None = None, *, final: bool = False) -> str:
        """The status line, e.g. `predict: 4,096/10,000 rows (41%), 22.1 rows/s, ETA 4m 27s`."""
        return f"{self.label}: {self._fields(now, final)}"

    def _fields(self, now: float | None, final: bool) -> str:
        parts = [self.lead] if self.lead else []
        if self.total:
            parts.append(f"{self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)")
        else:
            parts.append(f"{self.done:,} {self.unit}")
        rate = self.rate(now)
        parts.append(f"{rate:,.1f} {self.rate_unit}/s" if rate is not None else f"? {self.rate_unit}/s")
        if final:
            parts.append(f"took {format_duration(self.elapsed(now))}")
        else:
            eta = self.eta(now)
            parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA ?")
        if self.tail:
            parts.append(self.tail)
        return ", ".join(parts)

    def write(self, now: float | None = None, *, final: bool = False) -> None:
        """Write the line now: a new plain line, or the terminal bar redrawn in place."""
        if not self.enabled:
            return
        now = self.clock() if now is None else now
        self._last_write = now
        try:
            if self.interactive:
                bar = ""
                if self.total:
                    filled = int(BAR_WIDTH * self.done / self.total)
                    bar = f" [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"
                text = f"{self.label}{bar} {self._fields(now, final)}"
                padding = " " * max(0, self._drawn - len(text))
                self._drawn = len(text)
                self.stream.write(f"\r{text}{padding}" + ("\n" if final else ""))
            else:
                self.stream.write(self.line(now, final=final) + "\n")
            self.stream.flush()
        except (ValueError, OSError):  # a closed or broken stream must not stop the work it reports on
            self.enabled = False

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Write the last line (with the time it took); once."""
        if self._closed:
            return
        self._closed = True
        if self.enabled and (self.done or self.total):
            self.write(final=True)

    def __enter__(self) -> "Progress":
        if self.enabled:
            self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._token is not None:
            _ACTIVE.reset(self._token)
            self._token = None
        if exc_type is None:
            self.close()
        elif self.interactive and self.enabled and self._drawn:
            self.stream.write("\n")  # leave the bar's last frame on its own line before the error
            self._closed = True


# ---------------------------------------------------------------------------------------------- phase lines
# Work without a row or step count (an ensemble's members one after the other, a classical member's CV folds,
# selection, calibration, writing the bundle) says what it starts and finishes in one plain line each, so a run
# never sits silent. Like `advance`, the code doing the work is not handed a stream: `say` writes to the one the
# innermost `with phase_lines(...)` block opened (none: nothing happens, e.g. `progress=False`, the server).
_PHASES: contextvars.ContextVar["TextIO | None"] = contextvars.ContextVar("bsmfusion_phase_lines", default=None)
HEARTBEAT = 5.0  # seconds between two `Heartbeat` lines from a loop (LightGBM rounds)


class phase_lines:
    """`with phase_lines(enabled, stream):` — `say` and `stage` inside write to `stream` (default stderr);
    `enabled=False` silences them (an inner `phase_lines(False)` too)."""

    def __init__(self, enabled: bool = True, stream: TextIO | None = None):
        self.stream = (stream if stream is not None else sys.stderr) if enabled else None

    def __enter__(self) -> "phase_lines":
        self._token = _PHASES.set(self.stream)
        return self

    def __exit__(self, *exc) -> None:
        _PHASES.reset(self._token)


def say(text: str) -> None:
    """One line on the active phase stream; nothing without one. A broken stream never stops the work."""
    stream = _PHASES.get()
    if stream is None:
        return
    try:
        stream.write(text + "\n")
        stream.flush()
    except (ValueError, OSError):
        pass


class stage:
    """`with stage("ensemble: member gbdt (3/4)"):` says `<what> ...` on entry and `<what>: done in 12s` on a
    normal exit (`done` text appended after the time when set inside the block, e.g. a score); `seconds` holds
    the time the block took once it has exited normally (None before)."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic):
        self.what, self.clock, self.done = what, clock, ""
        self.seconds: float | None = None

    def __enter__(self) -> "stage":
        self._started = self.clock()
        say(f"{self.what} ...")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.seconds = self.clock() - self._started
            say(f"{self.what}: done in {format_duration(self.seconds)}" + (f", {self.done}" if self.done else ""))


class Heartbeat:
    """Says `text()` at most every `every` seconds when called (a loop's callback), so a long loop without a known
    end (boosting rounds) still shows it is moving."""

    def __init__(self, text: Callable[..., str], every: float = HEARTBEAT, clock: Callable[[], float] = time.monotonic):
        self.text, self.every, self.clock = text, every, clock
        self._last = clock()

    def __call__(self, *args) -> None:
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            say(self.text(*args))
