"""The retained log (BoundedLog) and incremental decoding (StreamDecoder), without processes."""

from __future__ import annotations

import random

import pytest

from oneshot_nb.engine.output import _MERGE_BELOW, BoundedLog, StreamDecoder

# -- StreamDecoder ----------------------------------------------------------------------


def test_decoder_holds_back_a_split_character_until_it_is_whole():
    """A multi-byte character cut between reads must not turn into U+FFFD."""
    decoder = StreamDecoder()
    data = "é€😀".encode()
    pieces = [decoder.decode(data[i : i + 1]) for i in range(len(data))]
    assert "".join(pieces) == "é€😀"
    assert pieces[0] == ""  # the first byte of "é" alone decodes to nothing yet


def test_decoder_replaces_invalid_bytes_instead_of_raising():
    """Binary garbage in a log is shown as U+FFFD, it never kills the pump."""
    assert StreamDecoder().decode(b"a\xff\xfeb") == "a\ufffd\ufffdb"


def test_decoder_flushes_a_truncated_character_as_replacement_at_the_end():
    """A stream that ends mid-character still reports that something was there."""
    decoder = StreamDecoder()
    assert decoder.decode("€".encode()[:2]) == ""
    assert decoder.decode(b"", final=True) == "\ufffd"


def test_decoder_keeps_nul_bytes():
    """NUL is a valid character; it must survive decoding."""
    assert StreamDecoder().decode(b"a\x00b") == "a\x00b"


def test_decoders_are_independent_per_stream():
    """Half a character on stdout must not be completed by stderr's bytes."""
    out, err = StreamDecoder(), StreamDecoder()
    euro = "€".encode()
    assert out.decode(euro[:1]) == ""
    assert err.decode(b"x") == "x"
    assert out.decode(euro[1:]) == "€"


# -- BoundedLog: keeping and merging ----------------------------------------------------


def test_log_keeps_everything_below_its_bound():
    """Output smaller than max_bytes is kept whole, nothing counted as dropped."""
    log = BoundedLog(100)
    log.append("stdout", b"hello ")
    log.append("stderr", b"oops ")
    log.append("stdout", b"world")
    assert log.text() == "hello oops world"
    assert log.size == 16
    assert log.dropped_bytes == 0


def test_log_ignores_empty_chunks():
    """An empty read (end of stream) adds no piece and no bytes."""
    log = BoundedLog(100)
    log.append("stdout", b"")
    assert (log.chunks(), log.size) == ([], 0)


def test_log_merges_small_chunks_of_the_same_stream():
    """A process writing a byte at a time must not cost a tuple per byte."""
    log = BoundedLog(1 << 20)
    for _ in range(1000):
        log.append("stdout", b"x")
    assert log.chunks() == [("stdout", "x" * 1000)]
    assert log.size == 1000


def test_log_does_not_merge_across_streams():
    """Arrival order between stdout and stderr is kept chunk by chunk."""
    log = BoundedLog(1000)
    for stream, data in [("stdout", b"a"), ("stdout", b"b"), ("stderr", b"c"), ("stdout", b"d")]:
        log.append(stream, data)
    assert log.chunks() == [("stdout", "ab"), ("stderr", "c"), ("stdout", "d")]


def test_log_stops_merging_once_a_chunk_is_large():
    """Merged chunks stay near _MERGE_BELOW so trimming the oldest one stays cheap."""
    log = BoundedLog(1 << 20)
    log.append("stdout", b"x" * _MERGE_BELOW)
    log.append("stdout", b"y")
    assert log.chunks() == [("stdout", "x" * _MERGE_BELOW), ("stdout", "y")]


def test_log_text_per_stream():
    """`text(stream)` returns one stream's retained text in order, `text()` both."""
    log = BoundedLog(1000)
    for stream, data in [("stdout", b"1"), ("stderr", b"A"), ("stdout", b"2"), ("stderr", b"B")]:
        log.append(stream, data)
    assert log.text("stdout") == "12"
    assert log.text("stderr") == "AB"
    assert log.text() == "1A2B"


def test_log_decodes_a_character_split_between_appends():
    """The log keeps bytes; a character split between two reads reads back whole."""
    log = BoundedLog(1000)
    euro = "€".encode()
    log.append("stdout", euro[:2])
    log.append("stderr", b"!")
    log.append("stdout", euro[2:] + b".")
    assert log.text("stdout") == "€."
    # A character shows where its last byte arrived.
    assert log.chunks() == [("stderr", "!"), ("stdout", "€.")]


# -- BoundedLog: trimming and accounting ------------------------------------------------


def test_log_trims_the_oldest_bytes_and_counts_them():
    """Past max_bytes the oldest output goes first and dropped_bytes says how much."""
    log = BoundedLog(10)
    log.append("stdout", b"0123456789")
    log.append("stderr", b"abcd")
    assert log.text() == "456789abcd"
    assert log.size == 10
    assert log.dropped_bytes == 4


def test_log_keeps_the_tail_of_a_chunk_larger_than_the_bound():
    """One huge write keeps its newest max_bytes, not its head and not nothing."""
    log = BoundedLog(8)
    log.append("stdout", b"abc")
    log.append("stdout", b"0123456789ABCDEF")
    assert log.text() == "89ABCDEF"
    assert log.size == 8
    assert log.dropped_bytes == 3 + 8


def test_trimming_inside_a_character_drops_the_rest_of_it():
    """A cut through a multi-byte character must not leave half of it to show as U+FFFD."""
    log = BoundedLog(4)
    log.append("stdout", "aé€".encode())  # 1 + 2 + 3 bytes: the cut falls inside "é"
    assert log.text() == "€"
    assert log.size == 3
    assert log.dropped_bytes == 3


def test_dropping_a_whole_chunk_that_ends_mid_character_leaves_no_replacement():
    """Regression: when the oldest chunk went whole and the next began inside a character,
    the retained output started with U+FFFD. With full 64 KiB reads and the default
    bound this is the usual case, not a corner."""
    log = BoundedLog(5000)
    log.append("stdout", b"a" * 4096 + "€".encode()[:1])
    log.append("stdout", "€".encode()[1:] + b"x" * 901)
    log.append("stdout", b"y" * 4097)  # pushes out exactly the first chunk
    assert log.dropped_bytes == 4097
    assert "\ufffd" not in log.text()
    assert log.text() == "x" * 901 + "y" * 4097
    assert log.size + log.dropped_bytes == 4097 + 903 + 4097


def test_log_with_zero_bound_keeps_nothing():
    """max_log_bytes=0 is allowed and means keep no output, only count it."""
    log = BoundedLog(0)
    log.append("stdout", b"abc")
    assert log.text() == ""
    assert log.dropped_bytes == 3


@pytest.mark.parametrize("max_bytes", [0, 1, 7, 100, 5000, 70_000])
def test_log_accounting_adds_up_for_any_sequence_of_ascii_writes(max_bytes: int):
    """size never exceeds max_bytes, size + dropped_bytes is everything appended, and the
    text is exactly the newest bytes."""
    log = BoundedLog(max_bytes)
    written = bytearray()
    for i in range(300):
        n = (i * 37) % 250 + (6000 if i % 50 == 0 else 0)
        data = bytes([ord("a") + i % 26]) * n
        log.append("stdout" if i % 3 else "stderr", data)
        written += data
        assert log.size <= max_bytes
        assert log.size + log.dropped_bytes == len(written)
    expected = written[len(written) - max_bytes :] if max_bytes else b""
    assert log.text() == expected.decode()


@pytest.mark.parametrize("seed", range(5))
def test_non_ascii_output_is_bounded_and_never_shows_a_cut_character(seed: int):
    """Random splits of valid UTF-8: the bound holds, bytes add up, and no U+FFFD appears."""
    rng = random.Random(seed)
    text = "".join(rng.choice("aé€😀█\n") for _ in range(40_000))
    data = text.encode()
    log = BoundedLog(3000)
    position = 0
    while position < len(data):
        size = rng.choice([1, 2, 3, 5, 100, 4095, 4096, 4097, 9000])
        log.append("stdout", data[position : position + size])
        position += size
        assert log.size <= 3000
        assert log.size + log.dropped_bytes == min(position, len(data))
        # Only a character still being written may show, as one U+FFFD at the very end.
        assert "\ufffd" not in log.text()[:-1]
    assert "\ufffd" not in log.text()
    assert text.endswith(log.text())
    assert len(log.text().encode()) >= 3000 - 3
