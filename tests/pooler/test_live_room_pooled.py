"""tests/realtime/test_live_room.py and the catalog reload of tests/http again through
PgBouncer (transaction mode): the hub's pool through the pooler, its LISTEN direct
(``EVENTLIVE_LISTEN_URL``)."""

from test_catalog_reload import (  # noqa: F401 - collected here with the pooled eventlive_db
    test_notify_reload_makes_a_new_function_routable,
)
from test_live_room import *  # noqa: F403 - the same tests, collected here with the pooled eventlive_db
