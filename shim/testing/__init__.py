"""eventlive's test kit: pytest fixtures (``shim.testing.plugin``, loaded automatically
through the ``pytest11`` entry point) and helpers to act as API roles in tests."""

from shim.testing.helpers import (
    act_as,
    as_anon,
    as_service_role,
    assert_rls_enabled,
    create_user,
    freeze_now,
    tables_without_rls,
    unfreeze_now,
)

__all__ = [
    "act_as",
    "as_anon",
    "as_service_role",
    "assert_rls_enabled",
    "create_user",
    "freeze_now",
    "tables_without_rls",
    "unfreeze_now",
]
