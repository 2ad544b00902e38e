"""LogTail: what a log view shows of a task's output, bounded, as a terminal would."""

from __future__ import annotations

import pytest

from oneshot_nb.render.tail import MAX_CHARS, MAX_LINES, LogTail


def shown(tail: LogTail) -> list[tuple[str, str]]:
    """The tail's outputs as (stream, line) pairs, partial lines included."""
    lines = []
    for output in tail.outputs():
        assert output["output_type"] == "stream"
        lines.extend((output["name"], line) for line in output["text"].splitlines())
    return lines


def text_size(tail: LogTail) -> int:
    return sum(len(output["text"]) for output in tail.outputs())


def test_complete_lines_are_shown_as_one_stream_output():
    """Consecutive lines of one stream make one stream output ending in a newline."""
    tail = LogTail()
    tail.feed("stdout", "one\ntwo\n")
    tail.feed("stdout", "three\n")
    assert tail.outputs() == (
        {"output_type": "stream", "name": "stdout", "text": "one\ntwo\nthree\n"},
    )
    assert tail.line_count == 3


def test_a_line_split_across_chunks_is_joined():
    """A line written in pieces shows as one line, before and after its newline."""
    tail = LogTail()
    tail.feed("stdout", "hel")
    assert shown(tail) == [("stdout", "hel")]
    tail.feed("stdout", "lo wor")
    tail.feed("stdout", "ld\nnext")
    assert shown(tail) == [("stdout", "hello world"), ("stdout", "next")]


def test_stderr_is_set_apart_in_arrival_order():
    """Lines keep their stream (name "stderr") and the order in which they completed."""
    tail = LogTail()
    tail.feed("stdout", "out 1\n")
    tail.feed("stderr", "err 1\n")
    tail.feed("stdout", "out 2\n")
    assert [(o["name"], o["text"]) for o in tail.outputs()] == [
        ("stdout", "out 1\n"),
        ("stderr", "err 1\n"),
        ("stdout", "out 2\n"),
    ]


def test_partial_lines_of_two_streams_do_not_mix():
    """A stdout line still being written is not joined with stderr text in between."""
    tail = LogTail()
    tail.feed("stdout", "abc")
    tail.feed("stderr", "warning\n")
    tail.feed("stdout", "def\n")
    assert shown(tail) == [("stderr", "warning"), ("stdout", "abcdef")]


def test_carriage_returns_collapse_a_progress_bar_to_its_latest_state():
    """tqdm-style "\\r 10%" ... "\\r100%" shows one line: the latest state."""
    tail = LogTail()
    tail.feed("stderr", "\r  0%|          |")
    for percent in range(10, 101, 10):
        tail.feed("stderr", f"\r{percent:3d}%|{'#' * (percent // 10):<10}|")
        assert tail.line_count == 1
    assert shown(tail) == [("stderr", "100%|##########|")]
    tail.feed("stderr", "\n")
    tail.feed("stdout", "done\n")
    assert shown(tail) == [("stderr", "100%|##########|"), ("stdout", "done")]


def test_carriage_returns_within_one_chunk_collapse_too():
    """Several rewrites in one chunk leave only the last one."""
    tail = LogTail()
    tail.feed("stdout", "\r 10%\r 20%\r 30%\n")
    assert shown(tail) == [("stdout", " 30%")]


def test_a_shorter_rewrite_keeps_the_rest_of_the_line_as_a_terminal_does():
    """After "\\r", text overwrites from the start of the line and no further."""
    tail = LogTail()
    tail.feed("stdout", "downloading\rDONE\n")
    assert shown(tail) == [("stdout", "DONEloading")]


def test_crlf_split_across_chunks_is_a_newline():
    """ "\\r" ending one chunk and "\\n" starting the next end the line, keeping its text."""
    tail = LogTail()
    tail.feed("stdout", "first\r")
    tail.feed("stdout", "\nsecond\r\n")
    assert shown(tail) == [("stdout", "first"), ("stdout", "second")]
    assert tail.line_count == 2


def test_a_carriage_return_at_a_chunk_end_then_text_rewrites_the_line():
    """ "\\r" ending one chunk and text starting the next is a rewrite, not a new line."""
    tail = LogTail()
    tail.feed("stdout", "50%\r")
    assert shown(tail) == [("stdout", "50%")]
    tail.feed("stdout", "60%")
    assert shown(tail) == [("stdout", "60%")]


def test_crlf_line_endings_are_newlines():
    """Windows-style "\\r\\n" endings do not blank the line."""
    tail = LogTail()
    tail.feed("stdout", "a\r\nb\r\n")
    assert shown(tail) == [("stdout", "a"), ("stdout", "b")]


def test_a_long_line_is_capped_keeping_its_end():
    """A line longer than max_line_chars keeps its newest max_line_chars characters."""
    tail = LogTail(max_chars=400)
    assert tail.max_line_chars == 100
    tail.feed("stdout", "x" * 250 + "END\n")
    [(_, line)] = shown(tail)
    assert len(line) == 100
    assert line.endswith("END")


def test_a_long_partial_line_is_capped_as_it_grows():
    """A line that never ends (a stream of dots) stays within max_line_chars."""
    tail = LogTail(max_chars=400)
    for _ in range(50):
        tail.feed("stdout", "." * 30)
    tail.feed("stdout", "END")
    [(_, line)] = shown(tail)
    assert len(line) == 100
    assert line.endswith("END")


def test_only_the_newest_max_lines_are_kept_and_the_rest_counted():
    """Lines beyond max_lines fall off the top and are counted in hidden_lines."""
    tail = LogTail(max_lines=10)
    tail.feed("stdout", "".join(f"line {i}\n" for i in range(25)))
    assert [line for _, line in shown(tail)] == [f"line {i}" for i in range(15, 25)]
    assert tail.hidden_lines == 15


def test_lines_fall_off_the_top_when_the_text_exceeds_max_chars():
    """The total text stays within max_chars even when few lines are long."""
    tail = LogTail(max_lines=1000, max_chars=1000)
    for i in range(100):
        tail.feed("stdout", f"{i:03d}" + "y" * 96 + "\n")
    assert text_size(tail) <= 1000
    lines = [line for _, line in shown(tail)]
    assert lines[-1].startswith("099")
    assert tail.hidden_lines == 100 - len(lines)


@pytest.mark.parametrize("width", [8, 300])
def test_the_payload_stays_bounded_after_100000_lines(width: int):
    """After 100,000 lines at most MAX_LINES lines and MAX_CHARS characters are shown,
    and hidden_lines says exactly how many are not."""
    tail = LogTail()
    for start in range(0, 100_000, 1000):
        tail.feed("stdout", "".join(f"{i:0{width}d}\n" for i in range(start, start + 1000)))
    lines = [line for _, line in shown(tail)]
    assert len(lines) <= MAX_LINES
    assert text_size(tail) <= MAX_CHARS
    assert tail.hidden_lines == 100_000 - len(lines)
    assert int(lines[-1]) == 99_999


def test_partial_lines_count_towards_the_bound():
    """Unfinished lines of both streams are shown and count towards both bounds, which
    hold however long they are; the newest complete line still fits beside them."""
    tail = LogTail(max_lines=10, max_chars=1000)
    tail.feed("stdout", "".join(f"{i:03d}" + "z" * 200 + "\n" for i in range(100)))
    tail.feed("stdout", "p" * 5000)
    tail.feed("stderr", "q" * 5000)
    assert tail.line_count <= 10
    assert text_size(tail) <= 1000
    streams = [(stream, line[:3]) for stream, line in shown(tail)]
    assert streams[-3:] == [("stdout", "099"), ("stdout", "ppp"), ("stderr", "qqq")]
    assert tail.hidden_lines == 100 - (len(streams) - 2)


def test_the_bound_holds_with_unfinished_lines_and_many_short_ones():
    """max_lines counts the unfinished lines too."""
    tail = LogTail(max_lines=10)
    tail.feed("stderr", "progress 5%")
    tail.feed("stdout", "".join(f"line {i}\n" for i in range(100)))
    tail.feed("stdout", "partial")
    assert tail.line_count == 10
    assert shown(tail)[-3:] == [
        ("stdout", "line 99"),
        ("stderr", "progress 5%"),
        ("stdout", "partial"),
    ]


def test_feeding_nothing_changes_nothing():
    """An empty chunk adds no line."""
    tail = LogTail()
    tail.feed("stdout", "")
    assert tail.outputs() == ()
    assert tail.line_count == 0


@pytest.mark.parametrize("seed", range(100))
def test_feed_many_shows_what_feeding_chunk_by_chunk_shows(seed: int):
    """feed_many skips the work for chunks that scroll out, but the tail it leaves (lines,
    unfinished lines, carriage returns, the hidden count) is the one that feeding each
    chunk in turn leaves."""
    import random

    rng = random.Random(seed)
    # Lines longer than the cap of 100 // 4 = 25 characters, rewritten by "\r" across
    # chunks, are where skipping work could go wrong.
    pieces = ["line", "\n", "\r", "\r\n", "x" * 30, "progress 10%", "\rprogress 20%", ""]
    chunks = []
    for _ in range(rng.randrange(1, 200)):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 8)))
        chunks.append((rng.choice(["stdout", "stderr"]), text))
    one_by_one, many = LogTail(max_lines=10, max_chars=100), LogTail(max_lines=10, max_chars=100)
    for tail in (one_by_one, many):
        tail.feed("stdout", "shown before\n" * 3 + "unfinished")
    for stream, text in chunks:
        one_by_one.feed(stream, text)
    many.feed_many(chunks)
    assert many.outputs() == one_by_one.outputs()
    assert many.hidden_lines == one_by_one.hidden_lines


def test_feed_many_caps_a_long_line_rewritten_across_chunks_as_feed_does():
    """A progress line longer than the cap, rewritten by "\r" in the next chunk, then
    scrolled away from: feed_many shows what a terminal (and feed) shows, the rewrite
    over what the cap kept. It once joined the chunks first and capped once."""
    chunks = [
        ("stdout", "A" * 5000 + "\r" + "B" * 10),
        ("stdout", "CCC\rD"),
        ("stderr", "warn\n" * 300),
    ]
    one_by_one, many = LogTail(), LogTail()
    for stream, text in chunks:
        one_by_one.feed(stream, text)
    many.feed_many(chunks)
    assert shown(many)[-1] == ("stdout", "DBBBBBBBBBCCC" + "A" * (4096 - 13))
    assert many.outputs() == one_by_one.outputs()
    assert many.hidden_lines == one_by_one.hidden_lines
