"""People's own refusals, beyond the generic ones of ``core.errors``: the second factor's."""

from __future__ import annotations

from orgplane.core.errors import Forbidden, Unauthenticated


class SecondFactorRequired(Unauthenticated):
    """A correct password without the valid one-time code its user's second factor needs."""

    code = "second_factor_required"
    title = "Second factor required"


class EnrolmentRequired(Forbidden):
    """A session whose org requires a second factor its user has not enrolled yet: it may only
    enrol one."""

    code = "mfa_enrolment_required"
    title = "Two-factor enrolment required"
