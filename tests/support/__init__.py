"""Helpers the tests share: the harness, the invariant checkers, each surface's helpers.

pytest rewrites their asserts as it does a test module's, so a failing helper shows its values.
"""

import pkgutil

import pytest

pytest.register_assert_rewrite(*(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)))
