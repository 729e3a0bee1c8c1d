"""Refusals of the allocation rules; each names the rule it enforces."""

from orgplane.core.errors import Conflict, InvalidInput


class CreditError(Conflict):
    code = "credit_rule"
    title = "Allocation refused"


class InsufficientPool(CreditError):
    code = "insufficient_pool"
    title = "Not enough available in the parent's pool"


class BelowConsumption(CreditError):
    code = "below_consumption"
    title = "Allocation below what is consumed or handed on"


class NoLimitForMeter(CreditError):
    code = "no_limit_for_meter"
    title = "The parent has no limit for this meter"


class NotAStepMultiple(InvalidInput):
    code = "not_a_step_multiple"
    title = "Amount is not a multiple of the meter's step"
