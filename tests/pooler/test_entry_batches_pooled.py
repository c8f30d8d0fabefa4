"""tests/http/test_entry_batches.py again through PgBouncer (transaction mode): batched
entries (each caller the single path's answer, one round trip per batch, webinars in
turn, deadlines, a database down), heartbeats answering while entries hold their share."""

from test_entry_batches import *  # noqa: F403 - the same tests, collected here with the pooled eventlive_db
