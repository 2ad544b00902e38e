"""AgentWatch: a task's stdout bytes in, an agent CLI's running summary out."""

from __future__ import annotations

import json

from oneshot_nb.agents.registry import AGENT_KINDS, PARSERS, Parser, agent_kind_error
from oneshot_nb.agents.summary import AgentSummary

# "auto" decides from the first events: these many JSON objects that no parser
# recognises make the output a plain log, and the watch stops reading it.
MAX_EARLY_EVENTS = 50
# Events seen before the CLI is recognised are kept, up to this size, and replayed.
MAX_EARLY_BYTES = 1 << 20


class AgentWatch:
    """Feed it a task's stdout bytes as they come; it keeps `summary`.

    Lines are split on b"\\n" (never inside a UTF-8 character) and each complete line
    is decoded once by json.loads; a line still being written is kept as a list of
    pieces, joined once. Nothing a stream holds makes feed or finish raise: a line that
    is not a JSON object, is longer than MAX_LINE, has an unknown type, or trips a
    parser bug is counted in `skipped_lines`; blank lines are not counted. With "auto",
    `summary` stays None until an event names the CLI, and for good (a plain log) if
    MAX_EARLY_EVENTS JSON objects pass first: the watch then stops reading.
    """

    MAX_LINE = 16 << 20  # a longer line is skipped and never buffered beyond this

    def __init__(self, kind: str) -> None:
        """`kind` is one of AGENT_KINDS; ValueError otherwise."""
        if not isinstance(kind, str) or kind not in AGENT_KINDS:
            raise ValueError(agent_kind_error(kind))
        self.kind = kind
        self.skipped_lines = 0
        self._parser: Parser | None = None
        self._quiet: tuple[bytes, ...] = ()  # the parser's quiet_prefixes
        if kind != "auto":
            self._use(PARSERS[kind]())
        self._pieces: list[bytes] = []  # the line being written
        self._pending = 0  # its size so far
        self._overlong = False  # the line being written is past MAX_LINE: dropped
        self._early: list[dict] = []  # events not recognised yet ("auto")
        self._early_bytes = 0
        self._early_seen = 0
        self._gave_up = False

    @property
    def summary(self) -> AgentSummary | None:
        """None until the CLI is recognised ("auto"); from the start for a fixed kind."""
        return self._parser.summary if self._parser is not None else None

    @property
    def failed(self) -> str | None:
        """The summary's error, if the agent failed."""
        summary = self.summary
        return summary.error if summary is not None else None

    def feed(self, data: bytes) -> bool:
        """Reads a chunk of stdout; True when the summary changed. Any bytes-like
        object is accepted (a str is a TypeError: this reads bytes)."""
        if self._gave_up or not data:
            return False
        if not isinstance(data, bytes):
            data = bytes(data)
        lines = data.split(b"\n")
        tail = lines.pop()
        if not lines:
            self._keep(tail)
            return False
        if self._overlong:
            # The dropped line ends here; it was counted when it grew too long.
            self._overlong = False
            lines[0] = b""
        elif self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces = []
            self._pending = 0
        before = self._state()
        for line in lines:
            self._line(line)
            if self._gave_up:
                return False
        self._keep(tail)
        return self._state() != before

    def finish(self) -> bool:
        """End of stream: reads a last line left without a newline, if it is complete
        JSON (else it is skipped); True if the summary changed."""
        if self._gave_up:
            return False
        before = self._state()
        if self._pieces and not self._overlong:
            self._line(b"".join(self._pieces))
        self._pieces = []
        self._pending = 0
        self._overlong = False
        if self._parser is None:
            # Never recognised: those events were of no CLI we know.
            self.skipped_lines += len(self._early)
            self._early = []
            self._early_bytes = 0
        return self._state() != before

    def _keep(self, piece: bytes) -> None:
        if not piece or self._overlong:
            return
        self._pending += len(piece)
        if self._pending > self.MAX_LINE:
            self._pieces = []
            self._pending = 0
            self._overlong = True
            self.skipped_lines += 1
        else:
            self._pieces.append(piece)

    def _use(self, parser: Parser) -> None:
        self._parser = parser
        self._quiet = tuple(getattr(parser, "quiet_prefixes", ()))

    def _line(self, line: bytes) -> None:
        if len(line) > self.MAX_LINE:
            self.skipped_lines += 1
            return
        if self._quiet and line.startswith(self._quiet):
            return  # an event the parser would ignore: not worth decoding
        if not line.startswith(b"{"):
            # Only JSON objects are events: other lines cost no json.loads.
            stripped = line.strip()
            if not stripped:
                return
            if not stripped.startswith(b"{"):
                self.skipped_lines += 1
                return
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            # ValueError covers bad JSON, bad UTF-8 and integers too long to convert.
            self.skipped_lines += 1
            return
        if isinstance(event, dict):
            self._event(event, len(line))
        else:
            self.skipped_lines += 1

    def _event(self, event: dict, size: int) -> None:
        parser = self._parser
        if parser is None:
            parser = _recognise(event)
            if parser is None:
                self._remember(event, size)
                return
            self._use(parser)
            early, self._early = self._early, []
            for old in early:
                self._apply(parser, old)
        self._apply(parser, event)

    def _apply(self, parser: Parser, event: dict) -> None:
        try:
            known = parser.handle(event)
        except Exception:  # a parser's bug must not reach the loop reading the task
            known = False
        if not known:
            self.skipped_lines += 1

    def _remember(self, event: dict, size: int) -> None:
        self._early_seen += 1
        if self._early_seen >= MAX_EARLY_EVENTS:
            self._gave_up = True
            self.skipped_lines += len(self._early) + 1
            self._early = []
            self._pieces = []
            return
        if self._early_bytes + size <= MAX_EARLY_BYTES:
            self._early.append(event)
            self._early_bytes += size
        else:
            self.skipped_lines += 1

    def _state(self) -> tuple | None:
        """What the summary shows, to tell whether a chunk changed it."""
        summary = self.summary
        if summary is None:
            return None
        return (
            summary.turns,
            summary.tool_calls,
            summary.last_tool,
            summary.last_message,
            summary.tokens,
            summary.cost_usd,
            summary.result,
            summary.error,
        )


def _recognise(event: dict) -> Parser | None:
    for parser_class in PARSERS.values():
        try:
            recognised = parser_class.recognises(event)
        except Exception:  # as in _apply: a parser's bug is a skipped line
            recognised = False
        if recognised:
            return parser_class()
    return None
