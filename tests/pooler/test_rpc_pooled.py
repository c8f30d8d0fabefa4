"""tests/http/test_rpc.py again, the shim's pool through PgBouncer in transaction mode:
every status row of the RPC routes, the errors with their PostgREST bodies."""

from test_rpc import *  # noqa: F403 - the same tests, collected here with the pooled eventlive_db
