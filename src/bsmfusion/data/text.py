"""The dialogue side of preprocessing: tokenizer loading, and cells → cleaned messages → chunked token ids."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..config import TextConfig
from ..resources import force_offline, minilm_path, resolve_encoder_path
from .chunking import ChunkedThread, ChunkPacker
from .dialogue import CleaningOptions, parse_segments, to_text


def tokenizer_source(text_cfg: TextConfig) -> Path:
    """Folder the tokenizer is read from: `text.tokenizer`, else the encoder folder, else the bundled MiniLM vocabulary."""
    if text_cfg.tokenizer:
        return resolve_encoder_path(text_cfg.tokenizer) if text_cfg.tokenizer == "minilm" else Path(text_cfg.tokenizer)
    if text_cfg.encoder_config is not None and text_cfg.encoder == "minilm":
        return minilm_path()
    return resolve_encoder_path(text_cfg.encoder)


def load_tokenizer(source: str | Path):
    """A Hugging Face tokenizer from a local folder (``from_pretrained(folder)``, offline)."""
    force_offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), local_files_only=True)


def tokenizer_is_uncased(tokenizer) -> bool:
    """True when the tokenizer maps upper and lower case to the same ids (then we lowercase before cleaning)."""
    return tokenizer("Hello World", add_special_tokens=False)["input_ids"] == tokenizer(
        "hello world", add_special_tokens=False
    )["input_ids"]


class TextPipeline:
    """Turns the text cells of each row into a `ChunkedThread` (C chunks × ≤T token ids)."""

    def __init__(self, text_cfg: TextConfig, tokenizer):
        self.cfg = text_cfg
        self.tokenizer = tokenizer
        cleaning = text_cfg.cleaning
        self.cleaning = CleaningOptions(
            replace_urls=cleaning.replace_urls,
            replace_emails=cleaning.replace_emails,
            url_token=cleaning.url_token,
            email_token=cleaning.email_token,
            strip_html=cleaning.strip_html,
            lowercase=tokenizer_is_uncased(tokenizer),
        )
        self.packer = ChunkPacker(
            tokenizer,
            max_chunks=text_cfg.max_chunks,
            chunk_tokens=text_cfg.chunk_tokens,
            head_chunks=text_cfg.resolved_head_chunks,
            role_prefix=text_cfg.role_prefix,
        )

    def encode(self, rows: Sequence[Sequence[Any]]) -> list[ChunkedThread]:
        """`rows[i]` holds the text cells of row i (one per `data.text` column).

        A cell longer than `text.max_chars` keeps its first quarter and last three quarters of that budget: far
        more than C×T tokens need, and it bounds the time one huge cell can take.
        """
        threads = [parse_segments([self._cap(to_text(cell)) for cell in cells], self.cleaning) for cells in rows]
        return self.packer.pack_threads(threads)

    def _cap(self, text: str) -> str:
        limit = self.cfg.max_chars
        if len(text) <= limit:
            return text
        head = limit // 4
        return text[:head] + "\n" + text[len(text) - (limit - head):]

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)
