"""Migrations: apply the versioned SQL once each and re-apply changed functions, policies
and indexes, under one lock, refusing drift (``eventlive db migrate | status | plan``)."""

from shim.migrate.apply import (
    AppliedFile,
    MigrateResult,
    MigrationPlan,
    Status,
    baseline,
    migrate,
    plan,
    repair,
    status,
)
from shim.migrate.errors import (
    ApplyError,
    DriftError,
    LockTimeoutError,
    MigrationError,
    SourceError,
)

__all__ = [
    "AppliedFile",
    "ApplyError",
    "DriftError",
    "LockTimeoutError",
    "MigrateResult",
    "MigrationError",
    "MigrationPlan",
    "SourceError",
    "Status",
    "baseline",
    "migrate",
    "plan",
    "repair",
    "status",
]
