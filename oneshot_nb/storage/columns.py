"""Reading the history's newer columns: JSON and figures that another program, or a
broken file, may have filled with anything. What cannot be read reads as nothing; the
rest of the task still reads."""

from __future__ import annotations

import json
from typing import Any

from ..agents import AgentSummary


def json_list(value: Any, kind: type) -> list[Any]:
    """A JSON list of `kind` as stored; what cannot be read is left out."""
    try:
        data = json.loads(value) if value else []
    except (ValueError, TypeError):
        return []
    return [item for item in data if isinstance(item, kind)] if isinstance(data, list) else []


def number(value: Any, kind: type) -> Any:
    """A stored figure, or None for one that is not a number (a database is data)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    # NaN, infinities and figures no task reaches (a garbled row) are not shown.
    return kind(value) if value == value and abs(value) < 1e18 else None


def json_object(value: Any) -> dict[str, Any]:
    """A JSON object as stored; {} for none, and for one that cannot be read."""
    try:
        data = json.loads(value) if value else {}
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def agent(value: Any) -> AgentSummary | None:
    """An agent's summary as stored; None for none, and for one that cannot be read
    (the rest of the task still can)."""
    data = json_object(value)
    return AgentSummary.from_dict(data) if data else None
