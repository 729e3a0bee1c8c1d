"""Where each surface is mounted, and which surface a path belongs to.

The audit log names the surface a change came through (``RequestMeta.surface``), and the
application's error handlers answer in the format of the surface a path belongs to
(``api.surfaces``); both read the path's prefix here. The native API has no prefix of its own:
every path outside the others is its.
"""

from __future__ import annotations

from typing import Literal

Surface = Literal["api", "datadog", "make", "sumologic", "scim", "console"]

DATADOG = "/datadog"
MAKE = "/make/api/v2"
SUMOLOGIC = "/sumologic/api"
SCIM = "/scim/v2"
CONSOLE = "/console"

PREFIXES: tuple[tuple[str, Surface], ...] = (
    (DATADOG, "datadog"),
    (MAKE, "make"),
    (SUMOLOGIC, "sumologic"),
    (SCIM, "scim"),
    (CONSOLE, "console"),
)


def surface_of(path: str) -> Surface:
    """The surface serving ``path``: the one whose prefix it is under, or the native API."""
    for prefix, surface in PREFIXES:
        if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
            return surface
    return "api"
