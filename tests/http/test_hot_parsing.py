"""The lean entrance's shortcuts answer as the long way does: the memo of
``routes.hot_route`` (bounded, the same answers as the parse of the path), a request
body in UTF-8 read without encoding detection while UTF-16 and UTF-32 bodies still are
detected, and fresh request ids (16 hex characters, distinct)."""

from __future__ import annotations

import json
import re

import pytest

from shim.http import bind, routes
from shim.http.respond import request_id

PATHS = [
    "/rpc/presence_ping",
    "/rest/v1/rpc/track_access",
    "/rpc/chat_send",
    "/api/webinars/42/presence/ping",
    "/api/webinars/42/access/track",
    "/api/webinars/7/presence/leave",
    "/api/webinars/42/stats/access",
    "/api/webinars/0/presence/ping",
    "/api/webinars/x1/presence/ping",
    "/api/webinars/42/presence/nope",
    "/elsewhere",
]


def test_the_memo_answers_what_parsing_the_path_answers() -> None:
    routes._SEEN.clear()
    first = [routes.hot_route(p) for p in PATHS]
    again = [routes.hot_route(p) for p in PATHS]
    assert first == again == [routes._hot_route(p) for p in PATHS]
    assert first[3] is not None
    assert first[3][1:] == ("presence_ping", 42)
    assert first[0] is not None
    assert first[0][1:] == ("presence_ping", None)
    assert [p for p, hot in zip(PATHS, first, strict=True) if hot is None] == PATHS[2:3] + PATHS[6:]


def test_the_memo_stays_bounded_under_a_spray_of_paths() -> None:
    routes._SEEN.clear()
    for i in range(routes.SEEN_MAX * 3):
        assert routes.hot_route(f"/api/webinars/{i + 1}/presence/ping") is not None
        assert routes.hot_route(f"/spray/{i}") is None
        assert len(routes._SEEN) <= routes.SEEN_MAX
    hot = routes.hot_route("/api/webinars/5/access/track")
    assert hot is not None
    assert hot[1:] == ("track_access", 5)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_a_body_is_read_in_each_encoding_json_allows(encoding: str) -> None:
    text = json.dumps({"session_id": "00000000-0000-4000-8000-000000000000", "name": "Zoë"})
    assert bind.parse_body(text.encode(encoding)) == json.loads(text)


def test_fresh_request_ids_are_16_hex_characters_and_distinct() -> None:
    ids = {request_id(None) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert request_id(b"abc-1") == "abc-1"
    assert len(request_id(b"bad\x7f")) == 16
