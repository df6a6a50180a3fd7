"""Figures of several servers side by side: one line per figure, ratios of ours to each peer,
targets judged, and the summary table that ``bench/broadcast.py`` prints at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

#: Other processes busier than this share of one CPU during a window make its figure suspect.
OTHER_LOAD_WARNING = 0.10


@dataclass(frozen=True)
class Goal:
    """A target for ours on one figure; ``judge`` answers met or not from every server's figure,
    None when the figure it compares with was not measured."""

    text: str
    judge: Callable[[dict[str, float]], bool | None]


def at_least(peer: str, times: float, why: str = "") -> Goal:
    """Ours at least ``times`` the figure of ``peer`` (higher is better)."""
    return Goal(f">= {times:g}x {peer}{why}",
                lambda figures: figures["ours"] >= times * figures[peer] if peer in figures else None)


def at_most(peer: str, times: float, why: str = "") -> Goal:
    """Ours at most ``times`` the figure of ``peer`` (lower is better)."""
    return Goal(f"<= {times:g}x {peer}{why}",
                lambda figures: figures["ours"] <= times * figures[peer] if peer in figures else None)


def at_most_value(limit: float, unit: str) -> Goal:
    return Goal(f"<= {limit:g} {unit}", lambda figures: figures["ours"] <= limit)


def at_least_value(limit: float, unit: str = "") -> Goal:
    return Goal(f">= {limit:,g}{unit}", lambda figures: figures["ours"] >= limit)


@dataclass
class Row:
    """One figure of every server measured (``figures``: kind -> value), and its targets."""

    name: str
    figures: dict[str, float]
    goals: list[Goal] = field(default_factory=list)
    complete: bool = True
    suspect: bool = False

    def verdicts(self) -> list[str]:
        """Each goal with ": met", ": NOT met" or ": not measured" (ours or the peer it
        compares with was not run, or failed)."""
        said = []
        for goal in self.goals:
            met = goal.judge(self.figures) if "ours" in self.figures else None
            said.append(goal.text + (": not measured" if met is None else
                                     ": met" if met else ": NOT met"))
        return said


def row(name: str, figures: dict[str, float], goals: Iterable[Goal] = (), complete: bool = True,
        results: Iterable[dict] = ()) -> Row:
    """A summary line; ``results`` are the measurements behind it, checked for other load."""
    suspect = any(r.get("other_cpu", 0.0) > OTHER_LOAD_WARNING for r in results)
    return Row(name, figures, list(goals), complete, suspect)


def number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}x" if peer else "-"


def comparison(figures: dict[str, float], unit: str) -> str:
    """``ours 1,234 unit, baseline 56 (22.04x), ...``: every figure, ours / each peer's."""
    ours = figures.get("ours")
    return ", ".join(f"{kind} {number(value)}{unit if kind == 'ours' else ''}"
                     + (f" (ours/{kind} {ratio(ours, value)})" if kind != "ours" and ours is not None
                        else "")
                     for kind, value in figures.items())


def summary(rows: list[Row], kinds: tuple[str, ...]) -> list[str]:
    """The summary table: every server's figure, ours / each peer's, the targets judged."""
    peers = [kind for kind in kinds if kind != "ours"]
    width = max(len(r.name) for r in rows)
    lines = [f"{'':<{width}}  " + "".join(f"{kind:>10}  " for kind in kinds)
             + "".join(f"{'ours/' + peer:>11}  " for peer in peers) + "targets"]
    for r in rows:
        figures = r.figures
        cells = "".join(f"{number(figures[k]) if k in figures else '-':>10}  " for k in kinds)
        measured = set(figures)
        ratios = "".join(f"{ratio(figures['ours'], figures[p]) if {p, 'ours'} <= measured else '-':>11}  "
                         for p in peers)
        lines.append(f"{r.name:<{width}}  {cells}{ratios}{'; '.join(r.verdicts())}"
                     + ("" if r.complete else "  (INCOMPLETE run)")
                     + ("  (OTHER LOAD during a run: suspect)" if r.suspect else ""))
    return lines
