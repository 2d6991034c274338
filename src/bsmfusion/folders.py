"""Output folders: refuse to replace one by accident. No heavy imports: the CLI checks `--out` before torch loads."""
from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def check_out_folder(out: str | Path, overwrite: bool, flag: str = "overwrite=True") -> None:
    """Refuse to write into an existing non-empty folder (a bundle there would be replaced) unless `overwrite`;
    the error names the option that allows it, `flag` (the CLI passes `--overwrite`)."""
    out = Path(out)
    if overwrite or not out.exists():
        return
    if out.is_file():
        raise ConfigError(f"output '{out}' is a file; choose another output folder")
    if any(out.iterdir()):
        what = "holds a bundle" if (out / "manifest.json").is_file() else "is not empty"
        raise ConfigError(f"output folder '{out}' {what}; pass {flag} to replace it, or choose another folder")


def work_folder(out: str | Path) -> Path:
    """`<out>.work/`, next to the bundle folder: checkpoints of a training run until it succeeds."""
    out = Path(out)
    return out.with_name(out.name + ".work")


def check_work_folder(out: str | Path, resume: bool, overwrite: bool, flags: tuple[str, str] = ("resume=True",
                      "overwrite=True")) -> None:
    """Refuse to start a fresh training over an interrupted one: `<out>.work/` exists and neither `resume`
    (continue it) nor `overwrite` (discard it) was given. `flags` name the two options (the CLI's `--resume`,
    `--overwrite`)."""
    work = work_folder(out)
    if resume or overwrite or not work.exists():
        return
    raise ConfigError(f"{work} holds an interrupted training: pass {flags[0]} to continue it or {flags[1]} to "
                      "discard it")


def check_out_file(out: str | Path, overwrite: bool, flag: str = "overwrite=True") -> None:
    """Refuse to replace an existing output file unless `overwrite`; a folder there is refused always."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"output '{out}' is a folder; give a file name, e.g. {out / 'scores.csv'}")
    if out.exists() and not overwrite:
        raise ConfigError(f"output file '{out}' exists; pass {flag} to replace it, or choose another name")


def discard_work_folder(out: str | Path) -> None:
    """`--overwrite` without `--resume`: remove an interrupted run's `<out>.work/` (every kind; the neural and
    ensemble trainers would clear it too, a classical member never looks at it)."""
    import shutil

    shutil.rmtree(work_folder(out), ignore_errors=True)
