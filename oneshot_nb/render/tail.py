"""The newest lines of a log, as a terminal would show them, bounded for display."""

from __future__ import annotations

from collections import deque

MAX_LINES = 200  # a live view shows the newest lines; the whole log is in the history
# An update's payload is this text JSON-encoded; control characters take up to 6 bytes
# each there, so 16 KiB of text stays under 100 KiB on the wire whatever it holds.
MAX_CHARS = 16 * 1024
# Input sent to a task (a pipe's; a terminal echoes its own) goes in line with stdout, as
# a terminal shows it: "name? bob". A notebook's stream outputs are stdout and stderr.
SHOWN_AS = {"stdin": "stdout"}


class LogTail:
    """Lines of stdout and stderr in the order they completed, newest `max_lines` kept;
    "stdin" text is fed as stdout.

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
        stream = SHOWN_AS.get(stream, stream)
        if self._pending_cr.pop(stream, False):
            text = "\r" + text
        if text.endswith("\r"):
            # It may be the first half of "\r\n" split across two chunks: wait and see.
            text = text[:-1]
            self._pending_cr[stream] = True
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")
        parts = text.split("\n")
        skip = len(parts) - 1 - self.max_lines
        if skip > 0:
            # More complete lines than are shown: count the older ones without touching
            # them, so a flood costs a split, not Python work per line.
            self.hidden_lines += skip + len(self._lines)
            self._lines.clear()
            self._chars = 0
            self._partial.pop(stream, None)
            parts = parts[skip:]
        else:
            parts[0] = self._partial.pop(stream, "") + parts[0]
        for line in parts[:-1]:
            self._add(stream, self._fit(_overwrite(line)))
        last = _unfinished(parts[-1], self.max_line_chars)
        if last or self._pending_cr.get(stream):
            self._partial[stream] = last
        self._trim()

    def feed_many(self, chunks: list[tuple[str, str]]) -> None:
        """Feed (stream, text) chunks in order; those whose lines would all scroll out
        of the tail anyway only have their newlines counted."""
        newlines = 0
        cut = 0
        for index in range(len(chunks) - 1, -1, -1):
            newlines += chunks[index][1].count("\n")
            if newlines > self.max_lines:
                cut = index
                break
        # What each stream has after its last newline in the skipped chunks: the only
        # text of theirs that can still show, fed once per stream at the end.
        carry: dict[str, str] = {}
        for stream, text in chunks[:cut]:
            stream = SHOWN_AS.get(stream, stream)
            end = text.rfind("\n")
            if end >= 0:
                # Each newline completes a line; what is left is the line being written.
                self.hidden_lines += text.count("\n") + len(self._lines)
                self._lines.clear()
                self._chars = 0
                self._partial.pop(stream, None)
                self._pending_cr.pop(stream, None)
                carry[stream] = text[end + 1 :]
            else:
                # Rare in a flood: fed in turn, since a long line is capped after each
                # piece, and a capped line rewritten by "\r" keeps what the cap left.
                if stream in carry:
                    self.feed(stream, carry.pop(stream))
                self.feed(stream, text)
        for stream, text in carry.items():
            self.feed(stream, text)
        for stream, text in chunks[cut:]:
            self.feed(stream, text)

    def _fit(self, line: str) -> str:
        return line if len(line) <= self.max_line_chars else line[-self.max_line_chars :]

    def _add(self, stream: str, line: str) -> None:
        self._lines.append((stream, line))
        self._chars += len(line) + 1

    def _trim(self) -> None:
        """Drop the oldest complete lines until they fit beside the unfinished ones: those
        are shown too, so they count towards both bounds."""
        partial = [_overwrite(line) for line in self._partial.values() if line]
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
                result.append({"output_type": "stream", "name": stream, "text": _overwrite(line)})
        return tuple(result)

    @property
    def line_count(self) -> int:
        return len(self._lines) + sum(1 for line in self._partial.values() if line)


def _unfinished(line: str, limit: int) -> str:
    """A line still being written, kept so that more text can go on where the cursor
    is: what its carriage returns left on screen, then "\r" and the text after the last
    one. Both parts are capped, keeping their ends."""
    cr = line.rfind("\r")
    if cr < 0:
        return line[-limit:]
    return _overwrite(line[:cr])[-limit:] + "\r" + line[cr + 1 :][-limit:]


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
