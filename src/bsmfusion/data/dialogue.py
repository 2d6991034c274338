"""Parse a buyer-seller thread into role-tagged messages and clean each message.

Recognised formats (they may be mixed within one thread):

* ``[bom] ... [eom]`` message markers (nested or unbalanced markers are tolerated);
* role-prefixed turns ``BUYER:``, ``SELLER:``, ``YOU:``, ``THEM:``, ``A1:`` ... on separate lines,
  separated by ``<eos>`` or `` ||| ``, or following each other on one line;
* newline-separated messages;
* plain text (one message).

A line without a role that follows a role-prefixed message continues that message.
"""
from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable

ROLE_WORDS = (
    "buyer", "seller", "you", "them", "agent", "customer", "user", "assistant", "system",
    "support", "rep", "me", "host", "guest",
)
_ROLE_ALT = "|".join(ROLE_WORDS) + r"|[ab]\d{1,2}"
# A role at the start of a line: any case ("Buyer:", "buyer:").
_LINE_ROLE = re.compile(rf"^\s*(?P<role>{_ROLE_ALT})\s*:\s*", re.IGNORECASE)
# A role in the middle of a line must be written in capitals ("... ok THEM: fine") to avoid prose like "tell me: ...".
_INLINE_ROLE = re.compile(r"(?<=\s)(?=(?:" + "|".join(w.upper() for w in ROLE_WORDS) + r"|[AB]\d{1,2})\s*:\s)")
_MARKER = re.compile(r"\[\s*(bom|eom)\s*\]", re.IGNORECASE)
_SEPARATORS = re.compile(r"<\s*eos\s*>|\s\|\|\|\s|\|\|\|", re.IGNORECASE)
_BLOCK_TAGS = re.compile(r"<\s*(br|/p|p|/div|div|li|/li|tr|/tr|hr)\b[^>]*>", re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z!][^<>]{0,2000}>")
_RAW_TEXT_OPEN = re.compile(r"<\s*(script|style)\b[^<>]{0,2000}>", re.IGNORECASE)
_RAW_TEXT_CLOSE = {name: re.compile(rf"<\s*/\s*{name}\s*>", re.IGNORECASE) for name in ("script", "style")}
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"))
_SPACES = re.compile(r"[^\S\n]+")
_OPEN, _CLOSE = "\x00BOM\x00", "\x00EOM\x00"


@dataclass(frozen=True)
class Message:
    """One turn of a thread: `role` is lower-case (``buyer``, ``them``, ``a1``) or None when unknown."""

    role: str | None
    text: str

    def render(self, with_role: bool = True) -> str:
        """The message as fed to the tokenizer, e.g. ``buyer: is it still available?``."""
        return f"{self.render_prefix()} {self.text}" if with_role and self.role else self.text

    def render_prefix(self) -> str:
        """The role prefix `render` puts before the text (``buyer:``), or "" without a role."""
        return f"{self.role}:" if self.role else ""


@dataclass(frozen=True)
class CleaningOptions:
    replace_urls: bool = True
    replace_emails: bool = True
    url_token: str = "[url]"
    email_token: str = "[email]"
    strip_html: bool = True
    lowercase: bool = False


def split_role(line: str) -> tuple[str | None, str]:
    """(lower-case role or None, the rest) of one line: ``"buyer: $20?"`` → ("buyer", "$20?"); a rendered message
    (`Message.render`) splits back into its role and text."""
    match = _LINE_ROLE.match(line)
    return (match.group("role").lower(), line[match.end():]) if match else (None, line)


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' NA-like values."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(value != value)  # pandas.NA / NaT raise or compare unequal
    except (TypeError, ValueError):
        return True


def to_text(value: Any) -> str:
    """Coerce a cell to text: missing → "", bytes decoded as UTF-8 with replacement, lone surrogates replaced."""
    if is_missing(value):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _drop_raw_text_elements(text: str) -> str:
    """Remove `<script>`/`<style>` elements with their contents (code and CSS, not message text).

    An opening tag without its closing tag is left to the generic tag stripping (the text after it is kept);
    each search starts where the last one ended, so the time stays linear in the text length.
    """
    out: list[str] = []
    pos, unclosed = 0, set()
    while (opening := _RAW_TEXT_OPEN.search(text, pos)) is not None:
        name = opening.group(1).lower()
        closing = None if name in unclosed else _RAW_TEXT_CLOSE[name].search(text, opening.end())
        if closing is None:
            unclosed.add(name)
            out.append(text[pos:opening.end()])
            pos = opening.end()
            continue
        out.append(text[pos:opening.start()] + " ")
        pos = closing.end()
    out.append(text[pos:])
    return "".join(out)


def _strip_html(text: str) -> str:
    text = _drop_raw_text_elements(text)
    text = _BLOCK_TAGS.sub("\n", text)
    text = _TAG.sub(" ", text)
    return html.unescape(text)


def clean_message(text: str, options: CleaningOptions) -> str:
    """Remove zero-width/control characters, replace URLs and e-mails, collapse whitespace."""
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    text = "".join(ch if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs", "Co", "Cn") else " " for ch in text)
    if options.replace_emails:
        text = _EMAIL.sub(f" {options.email_token} ", text)
    if options.replace_urls:
        text = _URL.sub(f" {options.url_token} ", text)
    text = " ".join(text.split())
    return text.lower() if options.lowercase else text


def _split_markers(text: str) -> list[str]:
    """Split on [bom]/[eom]: every marker ends the current segment, so nesting and missing markers are harmless."""
    return [part for part in _MARKER.split(text) if part.lower() not in ("bom", "eom")]


def _segments(text: str) -> list[tuple[str, bool, bool]]:
    """Raw message candidates as (text, starts_new_message, inside_marker_block), before cleaning.

    The first segment of a [bom] block starts a new message and the block's other role-less lines continue it;
    outside markers, a role-less line continues the message before it only when that one has a role.
    """
    segments: list[tuple[str, bool, bool]] = []
    has_markers = _MARKER.search(text) is not None
    for block in _split_markers(text) if has_markers else [text]:
        block_start = has_markers
        for line in block.split("\n"):
            for piece in _INLINE_ROLE.split(line):
                if piece.strip():
                    segments.append((piece, block_start, has_markers))
                    block_start = False
    return segments


def parse_thread(value: Any, options: CleaningOptions | None = None) -> list[Message]:
    """Parse one thread cell into cleaned messages; an empty or missing cell gives ``[]``."""
    options = options or CleaningOptions()
    text = to_text(value)
    if not text.strip():
        return []
    # HTML first, but protect the <eos> separator, which looks like a tag.
    text = _SEPARATORS.sub("\n", text)
    if "<" in text or "&" in text:
        text = _strip_html(text) if options.strip_html else html.unescape(text)
    messages: list[Message] = []
    for segment, starts_new, in_block in _segments(text):
        match = _LINE_ROLE.match(segment)
        role = match.group("role").lower() if match else None
        body = clean_message(segment[match.end():] if match else segment, options)
        if not body and role is None:
            continue
        if role is None and not starts_new and messages and (in_block or messages[-1].role is not None):
            previous = messages[-1]
            messages[-1] = Message(previous.role, f"{previous.text} {body}".strip())
            continue
        if body or role is not None:
            messages.append(Message(role, body))
    return [m for m in messages if m.text or m.role]


def parse_segments(values: Iterable[Any], options: CleaningOptions | None = None) -> list[Message]:
    """Several text columns of one row, each parsed on its own and concatenated as separate segments."""
    messages: list[Message] = []
    for value in values:
        messages.extend(parse_thread(value, options))
    return messages
