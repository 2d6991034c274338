"""Pack a thread's messages into at most C chunks of at most T tokens (special tokens included).

Whole messages are packed greedily; a message that does not fit in an empty chunk is split across chunks,
never cut, and each continuation chunk starts again with the message's role prefix (``buyer :``) so every chunk
says who is speaking. When a thread needs more than C chunks, the first `head` chunks and the last `C - head` chunks
are kept and the middle is dropped: the end of a thread usually holds its resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .dialogue import Message


@dataclass(frozen=True)
class ChunkedThread:
    """Token ids of one thread: `chunks[i]` includes the special tokens, so `len(chunks[i]) <= T`.

    `empty` marks a thread with no text: it is encoded as one chunk holding only the special tokens.
    `total_chunks` counts the chunks before head+tail truncation.
    """

    chunks: list[list[int]]
    empty: bool
    total_chunks: int

    @property
    def truncated(self) -> bool:
        return self.total_chunks > len(self.chunks)

    @property
    def num_tokens(self) -> int:
        return sum(len(c) for c in self.chunks)


def special_token_frame(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens a tokenizer puts before and after one sequence (``[CLS]``, ``[SEP]`` for BERT).

    Found by encoding one word with and without specials, so it works for any Hugging Face tokenizer.
    """
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return list(full[:start]), list(full[start + len(bare):])
    raise ValueError("cannot locate the special tokens this tokenizer adds around a sequence")


class ChunkPacker:
    """Tokenise messages (in one batched tokenizer call) and pack them into chunks."""

    def __init__(self, tokenizer, max_chunks: int, chunk_tokens: int, head_chunks: int, role_prefix: bool = True):
        self.prefix, self.suffix = special_token_frame(tokenizer)
        specials = len(self.prefix) + len(self.suffix)
        if chunk_tokens <= specials:
            raise ValueError(f"text.chunk_tokens ({chunk_tokens}) must exceed the {specials} special tokens")
        self.tokenizer = tokenizer
        self.max_chunks = max_chunks
        self.chunk_tokens = chunk_tokens
        self.head_chunks = min(head_chunks, max_chunks)
        self.role_prefix = role_prefix
        self.capacity = chunk_tokens - specials

    def _with_specials(self, ids: list[int]) -> list[int]:
        return [*self.prefix, *ids, *self.suffix]

    def pack_ids(self, message_ids: Sequence[Sequence[int]],
                 role_prefixes: Sequence[Sequence[int]] | None = None) -> ChunkedThread:
        """Pack pre-tokenised messages (ids without special tokens) into a `ChunkedThread`: every chunk body
        (`chunk_bodies`), then the head + tail window of at most C of them, each framed by the special tokens."""
        bodies = self.chunk_bodies(message_ids, role_prefixes)
        if not bodies:
            return ChunkedThread(chunks=[self._with_specials([])], empty=True, total_chunks=1)
        total = len(bodies)
        if total > self.max_chunks:
            tail = self.max_chunks - self.head_chunks
            bodies = bodies[: self.head_chunks] + (bodies[-tail:] if tail else [])
        return ChunkedThread(chunks=[self._with_specials(b) for b in bodies], empty=False, total_chunks=total)

    def chunk_bodies(self, message_ids: Sequence[Sequence[int]],
                     role_prefixes: Sequence[Sequence[int]] | None = None) -> list[list[int]]:
        """Every chunk body (ids without special tokens, each ≤ T − specials) of a thread, before the head + tail
        window: greedy packing from the thread's first message.

        Stable under appending: each decision depends only on the messages before it, so appending messages
        leaves every body but the last one unchanged (the last one may grow), and adds bodies after it. A
        thread re-scored after each new message therefore changes about one chunk per message (what the chunk
        vector cache, `scoring.chunk_cache`, relies on).

        `role_prefixes[i]` holds the ids of message i's role prefix (``buyer :``; empty for none), which
        `message_ids[i]` already starts with. When message i is split, every continuation chunk starts with those
        ids again, and its first piece holds at least the prefix and one token. A prefix longer than half a chunk
        is not repeated (the chunks would carry little else).
        """
        bodies: list[list[int]] = []
        current: list[int] = []
        prefixes = role_prefixes if role_prefixes is not None else [()] * len(message_ids)
        for ids, prefix in zip(message_ids, prefixes):
            ids = list(ids)
            if not ids:
                continue
            if len(current) + len(ids) <= self.capacity:
                current.extend(ids)
                continue
            if len(ids) <= self.capacity:  # fits a fresh chunk: keep the message whole
                bodies.append(current)
                current = list(ids)
                continue
            # Longer than a chunk: fill the current chunk, then continue in new ones behind the repeated prefix.
            repeat = list(prefix) if 2 * len(prefix) <= self.capacity else []
            room = self.capacity - len(current)
            if room < len(repeat) + 1:  # no room for the prefix and a token: start the message in a fresh chunk
                bodies.append(current)
                current, room = [], self.capacity
            current.extend(ids[:room])
            bodies.append(current)
            step = self.capacity - len(repeat)
            for offset in range(room, len(ids), step):
                current = repeat + ids[offset:offset + step]
                if offset + step < len(ids):
                    bodies.append(current)
        bodies.append(current)
        return [b for b in bodies if b]

    def pack_threads(self, threads: Sequence[Sequence[Message]]) -> list[ChunkedThread]:
        """Tokenise every message of every thread in one tokenizer call, then pack each thread."""
        messages = [m for thread in threads for m in thread]
        texts = [m.render(self.role_prefix) for m in messages]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        prefix_ids = self._role_prefix_ids(messages, ids)
        out: list[ChunkedThread] = []
        cursor = 0
        for thread in threads:
            end = cursor + len(thread)
            out.append(self.pack_ids(ids[cursor:end], prefix_ids[cursor:end]))
            cursor = end
        return out

    def _role_prefix_ids(self, messages: Sequence[Message], ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """Per message, the ids its rendered text starts with for its role prefix (``buyer :``), else []."""
        if not self.role_prefix:
            return [[] for _ in messages]
        roles = sorted({m.role for m in messages if m.role})
        by_role: dict[str, list[int]] = {}
        if roles:
            tokenized = self.tokenizer([Message(r, "").render_prefix() for r in roles], add_special_tokens=False)
            by_role = dict(zip(roles, tokenized["input_ids"]))
        out: list[list[int]] = []
        for message, message_ids in zip(messages, ids):
            prefix = list(by_role.get(message.role, [])) if message.role else []
            # Only a prefix the message's own ids start with is repeated (true for WordPiece; a tokenizer that
            # merges the prefix with the following text simply gets no repetition).
            out.append(prefix if prefix and list(message_ids[: len(prefix)]) == prefix else [])
        return out
