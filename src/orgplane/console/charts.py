"""Charts drawn on the server as SVG geometry: readable and printable without JavaScript.

The template draws what ``month_chart`` computes: the month's consumption as a running total,
a bar per day, the allocation as a horizontal line, and the forecast as a dashed line from
today to the end of the month.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28


@dataclass(frozen=True)
class MonthChart:
    width: int
    height: int
    bars: list[tuple[float, float, float, float, str]]  # x, y, width, height, title
    total: str  # polyline points of the running total
    forecast: str  # polyline points, today to the month's end ("" without usage)
    limit_y: float | None
    ticks: list[tuple[float, str]]  # y, label
    days: list[tuple[float, str]]  # x, label
    summary: str  # the chart in words, for screen readers and print


def _scale(value: float, top: float) -> float:
    plot = HEIGHT - TOP - BOTTOM
    return round(HEIGHT - BOTTOM - (value / top) * plot, 1) if top else HEIGHT - BOTTOM


def short(number: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            return f"{number / size:.3g}{suffix}"
    return f"{number:.0f}"


def month_chart(days: list[date], daily: list[int], limit: int | None, today: date) -> MonthChart:
    running, total = [], 0
    for quantity in daily:
        total += quantity
        running.append(total)
    elapsed = sum(1 for d in days if d <= today)
    so_far = running[elapsed - 1] if elapsed else 0
    forecast_end = round(so_far / elapsed * len(days)) if elapsed else 0
    top = max([forecast_end, limit or 0, *running, 1]) * 1.1
    step = (WIDTH - LEFT - RIGHT) / len(days)

    def x(i: float) -> float:
        return round(LEFT + step * i, 1)

    bars = []
    for i, (day, quantity) in enumerate(zip(days, daily, strict=True)):
        y = _scale(quantity, top)
        title = f"{day.isoformat()}: {quantity:,}"
        bars.append((x(i) + 1, y, round(step - 2, 1), round(HEIGHT - BOTTOM - y, 1), title))
    total_points = " ".join(f"{x(i + 1)},{_scale(v, top)}" for i, v in enumerate(running[:elapsed]))
    forecast = (
        f"{x(elapsed)},{_scale(so_far, top)} {x(len(days))},{_scale(forecast_end, top)}"
        if elapsed and so_far
        else ""
    )
    ticks = [
        (_scale(top * f / 1.1, top), short(top * f / 1.1)) for f in (0, 0.275, 0.55, 0.825, 1.1)
    ]
    labels = [(x(i + 0.5), str(d.day)) for i, d in enumerate(days) if d.day in (1, 8, 15, 22, 29)]
    words = f"{so_far:,} consumed so far this month"
    if limit is not None:
        words += f" of an allocation of {limit:,}"
    if elapsed:
        words += f"; at this pace, {forecast_end:,} by the month's end"
    return MonthChart(
        WIDTH,
        HEIGHT,
        bars,
        total_points,
        forecast,
        _scale(limit, top) if limit is not None else None,
        ticks,
        labels,
        words,
    )
