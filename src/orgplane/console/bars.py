"""The utilization bar a list of children shows per child, drawn by one function: a page lists
up to 50 of them, and a template macro spent more time on its filters and escapes than the
rest of the row."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

NO_LIMIT = Markup('<span class="muted">no limit</span>')


def bar(u: dict[str, Any] | None) -> Markup:
    """A child's most used meter as a ``<meter>`` with its percentage, or "no limit"."""
    if not u:
        return NO_LIMIT
    pct, meter = u["utilization_pct"], escape(u["meter"])
    return Markup(
        f'<span class="meter-bar" title="{meter}: {u["consumed"]:,} of {u["limit"]:,}">'
        f'<meter min="0" max="100" low="70" high="90" optimum="0" value="{min(pct, 100)}" '
        f'aria-label="{meter} used">{pct}%</meter> '
        f'<span class="pct">{round(pct, 1)}%</span></span>'
    )
