"""What a Supabase project's database is, as far as eventlive touches it: the roles and
owners that tell one apart (``shape``), and a builder of that shape for tests (``build``)."""

from shim.supabase.shape import (
    AUTH_ADMIN,
    MIGRATOR,
    OWNED_OBJECTS,
    REALTIME_ADMIN,
    SUPERUSER,
    SupabaseObject,
    is_supabase,
)

__all__ = [
    "AUTH_ADMIN",
    "MIGRATOR",
    "OWNED_OBJECTS",
    "REALTIME_ADMIN",
    "SUPERUSER",
    "SupabaseObject",
    "is_supabase",
]
