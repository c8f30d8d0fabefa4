"""``shim.http.accesslog``: each pending request becomes one JSON object per line, with
every field of ``_FIELDS`` in order, strings escaped whatever a client sent, nulls as
null and times rounded to the microsecond's thousandth (ms to 3 decimals)."""

from __future__ import annotations

import json
import logging

import pytest

from shim.http.accesslog import _FIELDS, AccessLog


def test_each_request_is_one_json_line_with_every_field_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eventlive.access")
    log = AccessLog()
    hostile = 'a"b\\c\n\td\x00é\u2028'
    rows = [
        (1795706195.1234567, hostile, "POST", "/api/webinars/1/presence/ping", "/rpc/{fn}",
         "api.presence_ping", "authenticated", 204, 1.23456, 0.5, None, None),
        (1795706195.5, "r2", "GET", "/rpc/" + hostile, "/rpc/{fn}", "api." + hostile, hostile,
         404, 0.0, 0.0, "miss", "PGRST202"),
    ]  # fmt: skip
    for row in rows:
        log.add(row)
    log.flush()
    (record,) = [r for r in caplog.records if r.name == "eventlive.access"]
    lines = record.getMessage().split("\n")
    assert len(lines) == 2
    for text, row in zip(lines, rows, strict=True):
        assert text.isascii()
        parsed = json.loads(text)
        assert list(parsed) == list(_FIELDS)
        expected = dict(zip(_FIELDS, row, strict=True))
        for field in ("ts", "ms", "db_ms"):
            assert parsed[field] == pytest.approx(expected.pop(field), abs=0.0005)
            parsed.pop(field)
        assert parsed == expected
    log.flush()  # nothing pending: nothing written
    assert len([r for r in caplog.records if r.name == "eventlive.access"]) == 1
