"""What the views say of agent tasks and of tasks waiting for input, as markup."""

from __future__ import annotations

import math

import pytest

from oneshot_nb import TaskState
from oneshot_nb.agents import AgentResult, AgentSummary
from oneshot_nb.render.markup import (
    AGENT_CHARS,
    STATE_COLOURS,
    agent_brief,
    agent_html,
    agents_total,
    cost_text,
    text_row,
    tokens_text,
    waiting_html,
)

PAYLOAD = "<img src=x onerror=alert(1)>"


def test_the_agent_line_is_escaped_cut_and_coloured_by_how_the_run_went():
    """Markup in what an agent said shows as text; the line is bounded whatever the
    summary holds; it is green once done, red once failed, grey while it runs."""
    running = AgentSummary("claude", turns=2, last_message=PAYLOAD, last_tool=f"Bash: {PAYLOAD}")
    value = agent_html(running)
    assert "<img" not in value and "&lt;img src=x" in value
    assert 'style="color:#555"' in value
    done = AgentSummary("claude", turns=1, result=AgentResult(ok=True, duration_s=3.0))
    assert f"color:{STATE_COLOURS[TaskState.COMPLETED]}" in agent_html(done)
    failed = AgentSummary("claude", error="rate limited", result=AgentResult(ok=False))
    assert f"color:{STATE_COLOURS[TaskState.FAILED]}" in agent_html(failed)
    assert "✗ error: rate limited" in agent_html(failed)
    long = AgentSummary("claude", last_tool="x" * 10_000, last_message="y" * 10_000)
    assert len(agent_html(long)) < 3 * AGENT_CHARS + 400
    assert agent_html(None) == ""
    assert agent_html(AgentSummary("claude")) == ""  # nothing said yet: no empty line


def test_an_agent_kind_from_the_database_is_escaped_in_its_attribute():
    """The kind is stored data too: a quote cannot leave the attribute."""
    value = agent_html(AgentSummary('x" onmouseover="alert(1)', turns=1))
    assert 'onmouseover="' not in value


@pytest.mark.parametrize("count", [0, 1, 2, 999, 1000, 12_345, 999_949, 999_950, 12_345_678])
def test_tokens_are_said_as_the_progress_line_says_them(count: int):
    """The table's totals and the rows' lines use one format."""
    assert tokens_text(count) == AgentSummary("claude", tokens=count).line()


@pytest.mark.parametrize("cost", [0.0, 0.0412, 0.99994, 1.0, 12.345])
def test_costs_are_said_as_the_progress_line_says_them(cost: float):
    assert cost_text(cost) == AgentSummary("claude", cost_usd=cost).line()


def test_the_brief_of_an_agent_run_is_its_turns_and_cost_or_tokens():
    assert agent_brief(AgentSummary("claude", turns=7, cost_usd=0.0412)) == "7 turns · $0.0412"
    assert agent_brief(AgentSummary("gemini", turns=1, tokens=12_345)) == "1 turn · 12.3k tokens"
    assert agent_brief(AgentSummary("codex")) == ""
    assert agent_brief(None) == ""
    # From a database written by anyone: wrong types are left out, never raised on.
    odd = AgentSummary("claude", turns="7", tokens=-1, cost_usd=math.nan)  # type: ignore[arg-type]
    assert agent_brief(odd) == ""


def test_totals_add_up_the_agents_that_report_each_amount():
    agents = [
        AgentSummary("claude", tokens=10_000, cost_usd=0.25),
        AgentSummary("gemini", tokens=2_345),
        AgentSummary("codex"),
        AgentSummary("claude", cost_usd=math.inf),  # type: ignore[arg-type]
    ]
    assert agents_total(agents) == "12.3k tokens · $0.2500"
    assert agents_total([AgentSummary("codex")]) == ""
    assert agents_total([]) == ""


def test_a_text_row_adds_an_agents_turns_and_cost_and_nothing_for_other_tasks():
    """The text format of other tasks stays as it was."""
    plain = text_row("abcd1234", TaskState.COMPLETED, "build", 0, "exit", None)
    assert plain == "abcd1234  COMPLETED   build exit 0"
    agent = AgentSummary("claude", turns=4, cost_usd=0.0412)
    row = text_row("abcd1234", TaskState.FAILED, "fix", 1, "exit", None, agent)
    assert row == "abcd1234  FAILED      fix exit 1  4 turns · $0.0412"


def test_waiting_for_input_is_said_only_while_idle_for_that_reason():
    value = waiting_html(TaskState.IDLE, "waiting for input")
    assert ">waiting for input<" in value
    assert f"color:{STATE_COLOURS[TaskState.IDLE]}" in value
    assert waiting_html(TaskState.IDLE, None) == ""
    assert waiting_html(TaskState.RUNNING, "waiting for input") == ""
    assert waiting_html(TaskState.IDLE, PAYLOAD) == ""
