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
    """Keeps the newest output text up to `max_bytes` (counted as raw output bytes).

    The oldest text goes first, and `dropped_bytes` says how much went. Stdout and
    stderr share one log, in arrival order.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.dropped_bytes = 0
        self._chunks: deque[tuple[str, str, int]] = deque()
        self._size = 0

    def append(self, stream: str, text: str, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            # Keep the last max_bytes characters: the same as bytes for ASCII output;
            # for other text it holds a little more, never more than 4x.
            keep = self.max_bytes
            self.dropped_bytes += nbytes - keep
            text, nbytes = (text[-keep:] if keep else ""), keep
        last = self._chunks[-1] if self._chunks else None
        if last is not None and last[0] == stream and last[2] < _MERGE_BELOW:
            # Merge small chunks so that a process writing a byte at a time does not
            # cost a tuple per byte, which would put memory far over the bound.
            self._chunks[-1] = (stream, last[1] + text, last[2] + nbytes)
        else:
            self._chunks.append((stream, text, nbytes))
        self._size += nbytes
        while self._size > self.max_bytes and self._chunks:
            old_stream, old_text, size = self._chunks.popleft()
            excess = self._size - self.max_bytes
            if size > excess and len(old_text) == size:
                # Trim the oldest ASCII chunk instead of dropping it whole, so the log
                # stays close to its bound when chunks are large.
                self._chunks.appendleft((old_stream, old_text[excess:], size - excess))
                size = excess
            self._size -= size
            self.dropped_bytes += size

    @property
    def size(self) -> int:
        return self._size

    def chunks(self) -> list[tuple[str, str]]:
        """The retained (stream, text) pieces in arrival order."""
        return [(stream, text) for stream, text, _ in self._chunks]

    def text(self, stream: str | None = None) -> str:
        return "".join(t for s, t, _ in self._chunks if stream is None or s == stream)
