import numpy as np

from bsmfusion.data.chunking import ChunkPacker, special_token_frame
from bsmfusion.data.dialogue import Message


def packer(tokenizer, max_chunks=3, chunk_tokens=16, head=1):
    return ChunkPacker(tokenizer, max_chunks=max_chunks, chunk_tokens=chunk_tokens, head_chunks=head)


def body(chunk):
    return chunk[1:-1]


def test_special_frame_is_cls_sep(tokenizer):
    assert special_token_frame(tokenizer) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])


def test_no_chunk_exceeds_T_with_specials_and_whole_messages_are_kept(tokenizer):
    p = packer(tokenizer, max_chunks=10, chunk_tokens=12)
    messages = [list(range(1000, 1000 + n)) for n in (4, 5, 3, 9, 2)]
    thread = p.pack_ids(messages)
    assert all(len(c) <= 12 for c in thread.chunks)
    assert all(c[0] == tokenizer.cls_token_id and c[-1] == tokenizer.sep_token_id for c in thread.chunks)
    # capacity 10: [4+5], [3], [9] would not fit after 3 → new chunk, then [2] fits after 9? no (11) → new chunk
    assert [body(c) for c in thread.chunks] == [messages[0] + messages[1], messages[2], messages[3], messages[4]]
    assert not thread.empty and not thread.truncated


def test_long_message_is_split_not_cut(tokenizer):
    p = packer(tokenizer, max_chunks=10, chunk_tokens=12)
    long = list(range(2000, 2025))  # 25 tokens > capacity 10
    thread = p.pack_ids([[7, 8], long, [9]])
    flat = [t for c in thread.chunks for t in body(c)]
    assert flat == [7, 8, *long, 9]
    assert all(len(c) <= 12 for c in thread.chunks)


def test_head_and_tail_are_kept_when_over_C_chunks(tokenizer):
    p = packer(tokenizer, max_chunks=3, chunk_tokens=12, head=1)
    messages = [[3000 + i] * 10 for i in range(6)]  # one full chunk each
    thread = p.pack_ids(messages)
    assert thread.total_chunks == 6 and thread.truncated
    assert [body(c)[0] for c in thread.chunks] == [3000, 3004, 3005]


def test_empty_thread_is_one_flagged_chunk_of_specials(tokenizer):
    thread = packer(tokenizer).pack_ids([])
    assert thread.empty and thread.chunks == [[tokenizer.cls_token_id, tokenizer.sep_token_id]]
    assert packer(tokenizer).pack_threads([[]])[0].empty


def test_pack_threads_tokenizes_roles_and_matches_per_thread_packing(tokenizer):
    p = packer(tokenizer, max_chunks=4, chunk_tokens=16)
    threads = [[Message("buyer", "is it still available"), Message("seller", "yes")], [], [Message(None, "hello")]]
    packed = p.pack_threads(threads)
    assert len(packed) == 3 and packed[1].empty
    expected = tokenizer("buyer: is it still available", add_special_tokens=False)["input_ids"]
    assert body(packed[0].chunks[0])[: len(expected)] == expected
    single = p.pack_threads([threads[2]])[0]
    assert single.chunks == packed[2].chunks


def test_real_long_thread_fills_C_chunks(tokenizer):
    p = packer(tokenizer, max_chunks=4, chunk_tokens=32, head=1)
    words = " ".join(f"word{i}" for i in range(400))
    thread = p.pack_threads([[Message("buyer", words), Message("seller", "final answer: no deal")]])[0]
    assert len(thread.chunks) == 4 and thread.truncated
    last = tokenizer.decode(thread.chunks[-1], skip_special_tokens=True)
    assert last.endswith("seller : final answer : no deal")


def test_split_message_repeats_its_role_prefix_in_every_continuation_chunk(tokenizer):
    p = packer(tokenizer, max_chunks=10, chunk_tokens=12)  # capacity 10
    prefix = [501, 502]
    long = prefix + list(range(2000, 2025))  # 27 ids including the prefix
    thread = p.pack_ids([[7, 8], long, [9]], role_prefixes=[[], prefix, []])
    bodies = [body(c) for c in thread.chunks]
    assert all(len(c) <= 12 for c in thread.chunks)
    assert bodies[0][:4] == [7, 8, *prefix]
    continuations = bodies[1:-1] if bodies[-1] == [9] else bodies[1:]
    assert continuations and all(b[:2] == prefix for b in continuations)
    # never cut: dropping the repeated prefixes gives back every token once, in order
    flat = bodies[0] + [t for b in bodies[1:] for t in (b[2:] if b[:2] == prefix else b)]
    assert flat == [7, 8, *long, 9]


def test_split_message_starts_fresh_when_only_part_of_its_prefix_would_fit(tokenizer):
    p = packer(tokenizer, max_chunks=10, chunk_tokens=12)  # capacity 10
    prefix = [501, 502]
    long = prefix + list(range(2000, 2020))
    thread = p.pack_ids([list(range(100, 109)), long], role_prefixes=[[], prefix])  # 1 free slot left
    bodies = [body(c) for c in thread.chunks]
    assert bodies[0] == list(range(100, 109))
    assert all(b[:2] == prefix for b in bodies[1:])


def test_continuation_chunks_repeat_the_role_prefix_with_the_real_tokenizer(tokenizer):
    p = packer(tokenizer, max_chunks=8, chunk_tokens=16, head=1)
    words = " ".join(f"word{i}" for i in range(40))
    thread = p.pack_threads([[Message("seller", "hi"), Message("buyer", words), Message("seller", "ok")]])[0]
    prefix = tokenizer("buyer:", add_special_tokens=False)["input_ids"]
    assert prefix == tokenizer("buyer: word0", add_special_tokens=False)["input_ids"][: len(prefix)]
    texts = [tokenizer.decode(c, skip_special_tokens=True) for c in thread.chunks]
    assert all(len(c) <= 16 for c in thread.chunks) and not thread.truncated
    buyer_chunks = [body(c) for c in thread.chunks if "word" in tokenizer.decode(c)]
    assert len(buyer_chunks) >= 3
    assert all(b[: len(prefix)] == prefix for b in buyer_chunks[1:])  # continuations restate the speaker
    assert texts[0].startswith("seller : hi buyer : word0")
    assert texts[-1].endswith("seller : ok")
    # never cut: without the repeated prefixes the chunks hold exactly the messages' tokens
    rendered = [tokenizer(m, add_special_tokens=False)["input_ids"] for m in ("seller: hi", f"buyer: {words}", "seller: ok")]
    flat = body(thread.chunks[0]) + [t for b in map(body, thread.chunks[1:]) for t in
                                     (b[len(prefix):] if b[: len(prefix)] == prefix and b in buyer_chunks else b)]
    assert flat == [t for ids in rendered for t in ids]


def test_no_role_prefix_repetition_when_role_prefixes_are_off(tokenizer):
    p = ChunkPacker(tokenizer, max_chunks=8, chunk_tokens=16, head_chunks=1, role_prefix=False)
    words = " ".join(f"word{i}" for i in range(40))
    thread = p.pack_threads([[Message("buyer", words)]])[0]
    flat = [t for c in thread.chunks for t in body(c)]
    assert flat == tokenizer(words, add_special_tokens=False)["input_ids"]


def _framed(p, bodies):
    return [[*p.prefix, *b, *p.suffix] for b in bodies]


def _window(p, bodies):
    """The head + tail window `pack_ids` keeps from a thread's full list of chunk bodies."""
    if len(bodies) <= p.max_chunks:
        return bodies
    tail = p.max_chunks - p.head_chunks
    return bodies[: p.head_chunks] + (bodies[-tail:] if tail else [])


def test_appending_messages_never_changes_an_earlier_chunk_even_as_the_window_moves(tokenizer):
    p = packer(tokenizer, max_chunks=3, chunk_tokens=12, head=1)  # capacity 10, keeps chunk 0 + the last 2
    rng = np.random.default_rng(0)
    lengths = [3, 4, 2, 7, 10, 1, 14, 5, 5, 23, 2, 9, 3, 3, 6]  # some fill a chunk, two must be split (14, 23)
    messages = [[501 + i % 2, *rng.integers(1000, 2000, n - 1).tolist()] for i, n in enumerate(lengths)]
    prefixes = [[501 + i % 2] for i in range(len(messages))]
    previous, windows = [], []
    for k in range(1, len(messages) + 1):
        bodies = p.chunk_bodies(messages[:k], prefixes[:k])
        # every chunk of the previous request but its last is unchanged; the last may only grow
        assert bodies[: len(previous) - 1] == previous[:-1]
        if previous:
            last = previous[-1]
            assert bodies[len(previous) - 1][: len(last)] == last
        thread = p.pack_ids(messages[:k], prefixes[:k])
        assert thread.chunks == _framed(p, _window(p, bodies)) and thread.total_chunks == len(bodies)
        windows.append(thread.chunks)
        previous = bodies
    assert len(previous) >= 8 and thread.truncated  # the thread passed C = 3 chunks long ago
    # the window moved: its tail chunks changed while the head chunk stayed the thread's first chunk
    assert len({tuple(map(tuple, w[1:])) for w in windows if len(w) == 3}) > 3
    assert all(w[0] == windows[-1][0] for w in windows if len(w) == 3)
    # each request brings about one chunk the previous requests never had (a split 23-token message: three)
    seen: set[tuple[int, ...]] = set()
    new_per_request = []
    for w in windows:
        new_per_request.append(sum(tuple(c) not in seen for c in w))
        seen.update(map(tuple, w))
    assert new_per_request[0] == 1 and max(new_per_request) <= 3
    assert sum(new_per_request) <= len(messages) + 4


def test_a_thread_growing_line_by_line_keeps_its_chunks_through_the_text_pipeline(tokenizer):
    from bsmfusion.data.text import TextPipeline
    from tests.helpers import tiny_config

    window_cfg = tiny_config(text={"max_chunks": 3, "chunk_tokens": 16}).text
    full_cfg = tiny_config(text={"max_chunks": 64, "chunk_tokens": 16}).text
    windowed, full = TextPipeline(window_cfg, tokenizer), TextPipeline(full_cfg, tokenizer)
    lines = [f"{'BUYER' if i % 2 == 0 else 'SELLER'}: " + " ".join(f"w{i}x{j}" for j in range(1 + (3 * i) % 7))
             for i in range(16)]
    previous: list[list[int]] = []
    for k in range(1, len(lines) + 1):
        cell = "\n".join(lines[:k])
        chunks = full.encode([[cell]])[0].chunks
        assert chunks[: len(previous) - 1] == previous[:-1]
        thread = windowed.encode([[cell]])[0]
        assert thread.chunks == (chunks if len(chunks) <= 3 else chunks[:1] + chunks[-2:])
        previous = chunks
    assert thread.truncated and thread.total_chunks >= 6
