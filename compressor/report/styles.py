"""How each kind of trial and reference looks, for the figures and the page alike: one definition.

A trial's *category* (:func:`point_category`) is its status, with a complete trial on the front
told apart; each has a label, a colour (the figures' points, the page's badges), a marker and a
size, and whether it was trained (an untrained trial has no metric to draw: it goes to the strip
below a figure).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CATEGORIES", "STATUS_COLORS", "REFERENCE_STYLE", "CONFIRMED_COLOR", "FLOOR_COLOR", "BUDGET_COLOR",
           "point_category", "status_color"]

CATEGORIES: dict[str, dict[str, Any]] = {
    "front": {"label": "on the Pareto front", "color": "#1f5fa8", "marker": "o", "size": 70, "trained": True},
    "complete": {"label": "complete, not on the front", "color": "#5b8fc9", "marker": "o", "size": 42, "trained": True},
    "stopped": {"label": "stopped early (metric at its last rung)", "color": "#d9801f", "marker": "v", "size": 46,
                "trained": True},
    "infeasible": {"label": "over budget (never trained)", "color": "#c8372d", "marker": "X", "size": 52,
                   "trained": False},
    "failed": {"label": "failed", "color": "#6b6b6b", "marker": "x", "size": 40, "trained": False},
}
#: the colour of each category, and of a trial still running (listed on the page, never drawn)
STATUS_COLORS = {**{key: style["color"] for key, style in CATEGORIES.items()}, "running": "#2a9d8f"}
#: marker, size and colour of the project's references; any other reference (the user's network) is ``P``
REFERENCE_STYLE = {"unet": ("*", 260, "#2b2b2b"), "micronet": ("D", 90, "#6a3d9a")}
OTHER_REFERENCE_STYLE = ("P", 90, "#2b2b2b")
CONFIRMED_COLOR = "#1b8a5a"
FLOOR_COLOR = "#8a8a8a"
BUDGET_COLOR = "#c8372d"


def point_category(row: Mapping[str, Any]) -> str:
    """The key of :data:`CATEGORIES` a finished trial's row is drawn as (``running`` for one still running)."""
    status = row["status"]
    if status == "complete":
        return "front" if bool(row.get("on_front")) else "complete"
    if status == "running":
        return "running"
    return status if status in CATEGORIES else "failed"


def status_color(category: str) -> str:
    return STATUS_COLORS.get(category, CATEGORIES["failed"]["color"])
