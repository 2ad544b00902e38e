"""The retained log of a task: the tail of its output, bounded in bytes."""

from __future__ import annotations

import codecs
from collections import deque

_MERGE_BELOW = 4096


class StreamDecoder:
    """Incremental UTF-8 decoding of one stream.

    A multi-byte character split across two chunks is held back until its last byte
    arrives; invalid bytes become U+FFFD instead of raising.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, data: bytes, final: bool = False) -> str:
        return self._decoder.decode(data, final)


class BoundedLog:
    """Keeps the newest output bytes, at most `max_bytes` of them.

    The oldest bytes go first, and `dropped_bytes` says how much went. Stdout and stderr
    share one log, in arrival order. Bytes are kept as read, not decoded: the hot path
    then copies nothing, and text is decoded (per stream, incrementally) when it is read.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dropped_bytes = 0
        self._chunks: deque[tuple[str, bytes]] = deque()
        self._size = 0

    def append(self, stream: str, data: bytes) -> None:
        if not data:
            return
        last = self._chunks[-1] if self._chunks else None
        if last is not None and last[0] == stream and len(last[1]) < _MERGE_BELOW:
            # Merge small chunks so that a process writing a byte at a time does not
            # cost a tuple per byte, which would put memory far over the bound.
            self._chunks[-1] = (stream, last[1] + data)
        else:
            self._chunks.append((stream, data))
        self._size += len(data)
        while self._size > self.max_bytes and self._chunks:
            old_stream, old = self._chunks.popleft()
            excess = self._size - self.max_bytes
            if len(old) > excess:
                kept = _skip_continuation(old[excess:])
                self._chunks.appendleft((old_stream, kept))
                dropped = len(old) - len(kept)
            else:
                dropped = len(old)
            self._size -= dropped
            self.dropped_bytes += dropped

    @property
    def size(self) -> int:
        return self._size

    def chunks(self, final: bool = True) -> list[tuple[str, str]]:
        """The retained output as (stream, text) pieces in arrival order.

        With `final` false, a character whose last bytes have not been read yet is left
        out instead of shown as U+FFFD: a live view then gets it whole from the next
        output event.
        """
        decoders: dict[str, StreamDecoder] = {}
        pieces = []
        for stream, data in self._chunks:
            decoder = decoders.get(stream)
            if decoder is None:
                decoders[stream] = decoder = StreamDecoder()
                if self.dropped_bytes:
                    # A chunk dropped whole may have ended inside a character: the rest
                    # of it, at the start of what is kept, would show as U+FFFD.
                    data = _skip_continuation(data)
            text = decoder.decode(data)
            if text:
                pieces.append((stream, text))
        for stream, decoder in decoders.items():
            rest = decoder.decode(b"", final=True) if final else ""
            if rest:
                pieces.append((stream, rest))
        return pieces

    def text(self, stream: str | None = None) -> str:
        return "".join(t for s, t in self.chunks() if stream is None or s == stream)


def _skip_continuation(data: bytes) -> bytes:
    """`data` without the UTF-8 continuation bytes it may start with: cutting the log
    inside a character must not leave half of it to decode as U+FFFD."""
    start = 0
    while start < min(3, len(data)) and 0x80 <= data[start] <= 0xBF:
        start += 1
    return data[start:] if start else data
