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
