"""When a batch stops itself: halt rules, as GNU parallel's --halt has them.

`soon,fail=1`: after the first failure no new task of the batch starts (those waiting
for a slot, their dependencies or a retry are interrupted); running ones finish.
`now,fail=1`: the running ones are interrupted too. `fail=N` counts failed tasks,
`fail=P%` a share of the batch's tasks; `success=...` counts those that completed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_RULE = re.compile(r"(soon|now),(fail|success)=([0-9]+(?:\.[0-9]+)?)(%?)")


@dataclass(frozen=True, slots=True)
class HaltRule:
    when: str  # "soon" | "now"
    kind: str  # "fail" | "success"
    count: float  # a number of tasks, or a percentage of them
    percent: bool

    def __str__(self) -> str:
        count = int(self.count) if float(self.count).is_integer() else self.count
        return f"{self.when},{self.kind}={count}{'%' if self.percent else ''}"

    def threshold(self, total: int) -> int:
        """How many tasks of `total` must have failed (or succeeded) to halt."""
        if self.percent:
            return max(1, math.ceil(total * self.count / 100 - 1e-9))
        return int(self.count)

    def met(self, failed: int, succeeded: int, total: int) -> bool:
        seen = failed if self.kind == "fail" else succeeded
        return seen >= self.threshold(total)


FAIL_FAST = HaltRule("soon", "fail", 1.0, False)  # --fail-fast, fail_fast=True


def check_halt(rule: Any) -> HaltRule | None:
    """A halt rule from its text (`now,fail=1`, `soon,fail=30%`, `now,success=2`), a
    HaltRule, or None for none; ValueError in one line for anything else."""
    if rule is None or isinstance(rule, HaltRule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"halt must be a rule such as 'now,fail=1', got {type(rule).__name__}")
    found = _RULE.fullmatch(rule.strip().replace(" ", ""))
    if found is None:
        raise ValueError(
            f"halt takes WHEN,fail=N or WHEN,success=N (WHEN: soon or now; N a count or a"
            f" percentage, e.g. now,fail=1 or soon,fail=30%), got {rule!r:.60}"
        )
    when, kind, number, percent = found.groups()
    count = float(number)
    if count <= 0 or (percent and count > 100) or (not percent and not count.is_integer()):
        raise ValueError(
            f"halt: {kind}= takes a whole number of tasks >= 1 or a percentage in (0, 100],"
            f" got {number}{percent}"
        )
    return HaltRule(when, kind, count, bool(percent))
