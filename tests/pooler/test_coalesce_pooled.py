"""tests/http/test_coalesce.py again through PgBouncer (transaction mode): coalesced
pings (each caller its own answer, one round trip per batch), the lean path answering as
the full one."""

from test_coalesce import *  # noqa: F403 - the same tests, collected here with the pooled eventlive_db
