"""The newest lines of a log, as a terminal would show them, bounded for display."""

from __future__ import annotations

from collections import deque

MAX_LINES = 500
# An update's payload is this text JSON-encoded; control characters take up to 6 bytes
# each there, so 32 KiB of text stays under 200 KiB on the wire whatever it holds.
MAX_CHARS = 32 * 1024


class LogTail:
    """Lines of stdout and stderr in the order they completed, newest `max_lines` kept.

    A carriage return starts its line over, as in a terminal, so a progress bar
    (tqdm, curl, pip) shows its latest state instead of one line per update. A line
    still being written is kept per stream. A line longer than a quarter of `max_chars`
    keeps its end, so that the unfinished lines of stdout and stderr and the newest
    complete line always fit the bound together.
    """

    def __init__(self, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> None:
        self.max_lines = max_lines
        self.max_chars = max_chars
        self.max_line_chars = max(1, max_chars // 4)
        self.hidden_lines = 0  # complete lines that fell off the top
        self._lines: deque[tuple[str, str]] = deque()
        self._chars = 0
        self._partial: dict[str, str] = {}
        self._pending_cr: dict[str, bool] = {}

    def feed(self, stream: str, text: str) -> None:
        if not text:
            return
        if self._pending_cr.pop(stream, False):
            text = "\r" + text
        if text.endswith("\r"):
            # It may be the first half of "\r\n" split across two chunks: wait and see.
            text = text[:-1]
            self._pending_cr[stream] = True
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")
        parts = text.split("\n")
        parts[0] = self._partial.pop(stream, "") + parts[0]
        for line in parts[:-1]:
            self._add(stream, self._fit(_overwrite(line)))
        last = self._fit(_overwrite(parts[-1]))
        if last or self._pending_cr.get(stream):
            self._partial[stream] = last
        self._trim()

    def _fit(self, line: str) -> str:
        return line if len(line) <= self.max_line_chars else line[-self.max_line_chars :]

    def _add(self, stream: str, line: str) -> None:
        self._lines.append((stream, line))
        self._chars += len(line) + 1

    def _trim(self) -> None:
        """Drop the oldest complete lines until they fit beside the unfinished ones: those
        are shown too, so they count towards both bounds."""
        partial = [line for line in self._partial.values() if line]
        lines_left = self.max_lines - len(partial)
        chars_left = self.max_chars - sum(len(line) for line in partial)
        while self._lines and (len(self._lines) > lines_left or self._chars > chars_left):
            _, old = self._lines.popleft()
            self._chars -= len(old) + 1
            self.hidden_lines += 1

    def outputs(self) -> tuple[dict[str, str], ...]:
        """The tail as notebook stream outputs: one per run of lines of one stream."""
        runs: list[list[str]] = []
        names: list[str] = []
        for stream, line in self._lines:
            if names and names[-1] == stream:
                runs[-1].append(line)
            else:
                names.append(stream)
                runs.append([line])
        result = [
            {"output_type": "stream", "name": name, "text": "\n".join(run) + "\n"}
            for name, run in zip(names, runs, strict=True)
        ]
        for stream, line in self._partial.items():
            if line:
                result.append({"output_type": "stream", "name": stream, "text": line})
        return tuple(result)

    @property
    def line_count(self) -> int:
        return len(self._lines) + sum(1 for line in self._partial.values() if line)


def _overwrite(line: str) -> str:
    """What a terminal shows of a line in which carriage returns rewind the cursor.

    Later text overwrites earlier text from the start of the line; a shorter rewrite
    keeps the rest of the longer one, as a terminal would.
    """
    if "\r" not in line:
        return line
    shown = ""
    for piece in line.split("\r"):
        shown = piece + shown[len(piece) :]
    return shown
