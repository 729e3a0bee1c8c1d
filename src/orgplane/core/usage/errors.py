"""Refusals of usage ingestion."""

from orgplane.core.errors import Conflict


class LimitExceeded(Conflict):
    code = "limit_exceeded"
    title = "Usage over a hard limit"
