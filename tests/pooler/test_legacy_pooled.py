"""tests/http/test_legacy.py again through PgBouncer (transaction mode): the legacy
``/api/webinars/{id}/...`` routes and supabase-py's ``postgrest`` client."""

from test_legacy import (  # noqa: F401 - collected here with the pooled eventlive_db
    api_db,
    test_legacy_routes_track_ping_leave_and_stats,
    test_postgrest_client_calls_the_hot_path_through_rest_v1,
)
