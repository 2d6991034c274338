"""User-facing errors: one line that names the column, row, key or file and says how to fix it."""
from __future__ import annotations


class BsmFusionError(Exception):
    """Base class for every error caused by user input (config, data, bundle).

    The CLI prints ``str(err)`` on one line and exits with status 2 — never a stack trace.
    """


class ConfigError(BsmFusionError, ValueError):
    """A config key is unknown, missing or has the wrong type/value."""


class DataError(BsmFusionError, ValueError):
    """An input table is unusable: missing column, bad value, empty file."""


class BundleError(BsmFusionError):
    """A model bundle is missing files or was tampered with."""


def show(value) -> str:
    """A cell value as users wrote it: `repr` of the plain Python value (np.int64(3) → 3), shortened."""
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, TypeError):
            pass
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class OptionError(ConfigError):
    """A scoring or training option has a bad value. The message names each option as `{name}` in its template, so
    every front end says it its own way: Python keeps the keyword (`threshold`), the CLI shows its flag
    (`--threshold`, via `render`). `str(err)` is the Python wording."""

    def __init__(self, template: str):
        self.template = template
        super().__init__(self.render())

    def render(self, names: dict[str, str] | None = None) -> str:
        """The message with each `{option}` replaced by `names[option]` (default: the option itself)."""
        import re

        names = names or {}
        return re.sub(r"\{([a-z_]+)\}", lambda m: names.get(m[1], m[1]), self.template)
