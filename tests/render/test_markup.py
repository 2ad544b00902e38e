"""What the views show, as markup without widgets: state colours and titles."""

from __future__ import annotations

from oneshot_nb import TaskState
from oneshot_nb.render.markup import STATE_COLOURS


def test_every_state_has_a_colour_of_its_own():
    """Six states, six different colours."""
    assert set(STATE_COLOURS) == set(TaskState)
    assert len(set(STATE_COLOURS.values())) == len(TaskState)


def test_a_long_name_is_shortened_in_the_title():
    """Regression: names were sent whole, so a 1 MB name cost 1 MB per row per tick."""
    from oneshot_nb.render.markup import NAME_CHARS, title_html

    html_text = title_html("n" * 1_000_000, "true", "abcd1234")
    assert len(html_text) < 2 * NAME_CHARS + 1000
    assert "n" * (NAME_CHARS - 1) + "…" in html_text
