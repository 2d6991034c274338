"""The dialogue side of preprocessing: tokenizer loading, and cells → cleaned messages → chunked token ids."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..config import TextConfig
from ..resources import minilm_path, resolve_encoder_path
from .chunking import ChunkedThread, ChunkPacker
from .dialogue import CleaningOptions, Message, parse_segments, to_text


def tokenizer_source(text_cfg: TextConfig) -> Path:
    """Folder the tokenizer is read from: `text.tokenizer`, else the encoder folder, else the bundled MiniLM vocabulary."""
    if text_cfg.tokenizer:
        return resolve_encoder_path(text_cfg.tokenizer) if text_cfg.tokenizer == "minilm" else Path(text_cfg.tokenizer)
    if text_cfg.encoder_config is not None and text_cfg.encoder == "minilm":
        return minilm_path()
    return resolve_encoder_path(text_cfg.encoder)


def load_tokenizer(source: str | Path):
    """A Hugging Face tokenizer from a local folder (``from_pretrained(folder)``, local files only: never the network)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), local_files_only=True)


def tokenizer_is_uncased(tokenizer) -> bool:
    """True when the tokenizer maps upper and lower case to the same ids (then we lowercase before cleaning)."""
    return tokenizer("Hello World", add_special_tokens=False)["input_ids"] == tokenizer(
        "hello world", add_special_tokens=False
    )["input_ids"]


def cleaning_options(text_cfg: TextConfig, *, lowercase: bool) -> CleaningOptions:
    """The message cleaning `text.cleaning` asks for; `lowercase` for an uncased tokenizer."""
    cleaning = text_cfg.cleaning
    return CleaningOptions(replace_urls=cleaning.replace_urls, replace_emails=cleaning.replace_emails,
                           url_token=cleaning.url_token, email_token=cleaning.email_token,
                           strip_html=cleaning.strip_html, lowercase=lowercase)


def cap_text(text: str, limit: int) -> str:
    """A cell longer than `limit` (`text.max_chars`) keeps its first quarter and last three quarters of that budget:
    far more than C×T tokens need, and it bounds the time one huge cell can take."""
    if len(text) <= limit:
        return text
    head = limit // 4
    return text[:head] + "\n" + text[len(text) - (limit - head):]


def thread_messages(rows: Sequence[Sequence[Any]], text_cfg: TextConfig,
                    cleaning: CleaningOptions) -> list[list[Message]]:
    """`rows[i]` holds the text cells of row i (one per `data.text` column) → its cleaned, role-tagged messages."""
    return [parse_segments([cap_text(to_text(cell), text_cfg.max_chars) for cell in cells], cleaning) for cells in rows]


def render_threads(rows: Sequence[Sequence[Any]], text_cfg: TextConfig, cleaning: CleaningOptions) -> list[str]:
    """Each row's thread as one string: its messages as the encoder sees them (``buyer: is it available?``, role
    prefix per `text.role_prefix`), one per line. What the classical members vectorise."""
    return ["\n".join(m.render(text_cfg.role_prefix) for m in messages)
            for messages in thread_messages(rows, text_cfg, cleaning)]


class TextPipeline:
    """Turns the text cells of each row into a `ChunkedThread` (C chunks × ≤T token ids)."""

    def __init__(self, text_cfg: TextConfig, tokenizer):
        self.cfg = text_cfg
        self.tokenizer = tokenizer
        self.cleaning = cleaning_options(text_cfg, lowercase=tokenizer_is_uncased(tokenizer))
        self.packer = ChunkPacker(
            tokenizer,
            max_chunks=text_cfg.max_chunks,
            chunk_tokens=text_cfg.chunk_tokens,
            head_chunks=text_cfg.resolved_head_chunks,
            role_prefix=text_cfg.role_prefix,
        )

    def encode(self, rows: Sequence[Sequence[Any]]) -> list[ChunkedThread]:
        """`rows[i]` holds the text cells of row i (one per `data.text` column); over-long cells are capped
        (`cap_text`)."""
        return self.packer.pack_threads(thread_messages(rows, self.cfg, self.cleaning))

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)
