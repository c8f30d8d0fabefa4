"""``/eventlive.js`` in a real browser (chromium, headless) against a running shim
(``eventlive serve`` as a process): a page imports the module, enters and pings; the shim
restarted mid-way → the client backs off and resumes; a 403 → it stops and sends nothing
more; a superseded session is announced; Retry-After is honoured; a hidden tab pauses;
the chat falls back to polling behind a circuit breaker. Delays run 50x faster
(``timeScale``), the logic is the module's own."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from browser import launch
from shim_support import SECRET, ShimDb, token

from shim.testing.process import ShimProcess

WEBINAR = 5150

PAGE = (
    """<!doctype html><html><body><script type=module>
import { join } from "/eventlive.js";
window.events = [];
window.start = (opts) => {
  const v = join({ webinarId: %d, timeScale: 0.02, ...opts });
  for (const t of ["entered", "ping", "tracked", "backoff", "resumed", "stopped",
                   "superseded", "paused", "mode", "messages", "sent", "send_failed"]) {
    v.addEventListener(t, (e) => window.events.push({ type: t, detail: e.detail }));
  }
  window.viewer = v;
  return true;
};
window.ready = true;
</script></body></html>"""
).replace("%d", str(WEBINAR))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch()


@pytest.fixture
def shim(shim_db: ShimDb) -> Iterator[ShimProcess]:
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute(
            "select set_config('role', 'service_role', false),"
            " set_config('request.jwt.claims', '{\"role\":\"service_role\"}', false)"
        )
        conn.execute(
            "select api.upsert_webinar(webinar_id => %s, title => 'client', "
            "heartbeat_seconds => 15, track_seconds => 30)",
            (WEBINAR,),
        )
    proc = ShimProcess(
        {
            "DATABASE_URL": shim_db.dsn,
            "JWT_SECRET": SECRET,
            "EVENTLIVE_SCHEMAS": "api",
            "EVENTLIVE_ACCESS_LOG": "0",
        }
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def user_token(shim_db: ShimDb) -> str:
    uid = str(uuid.uuid4())
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (uid,))
    return token({"sub": uid})


def open_page(browser: Any, shim: ShimProcess) -> Any:
    page = browser.new_page()
    page.route(
        f"{shim.base}/client-test",
        lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE),
    )
    page.goto(f"{shim.base}/client-test")
    page.wait_for_function("window.ready === true")
    return page


def count(page: Any, kind: str) -> int:
    return int(page.evaluate(f"window.events.filter(e => e.type === '{kind}').length"))


def wait_count(page: Any, kind: str, n: int, timeout: int = 15_000) -> None:
    page.wait_for_function(
        f"window.events.filter(e => e.type === '{kind}').length >= {n}", timeout=timeout
    )


def test_it_enters_pings_and_survives_a_shim_restart(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """track_access then pings at the server's cadence; the shim stopped → backoff events
    (growing delays), restarted → resumed, and pings go on with the same session."""
    page = open_page(browser, shim)
    page.evaluate("(t) => window.start({ token: t })", user_token(shim_db))
    wait_count(page, "entered", 1)
    wait_count(page, "ping", 2)
    session = page.evaluate("window.viewer.sessionId")
    shim.stop()
    wait_count(page, "backoff", 3)
    delays = page.evaluate(
        "window.events.filter(e => e.type === 'backoff').map(e => e.detail.delay)"
    )
    assert delays[2] > delays[0]
    pings_before = count(page, "ping")
    shim.start()
    wait_count(page, "resumed", 1, timeout=30_000)
    wait_count(page, "ping", pings_before + 2, timeout=15_000)
    assert page.evaluate("window.viewer.sessionId") == session
    assert page.evaluate("window.viewer.state") == "live"
    assert count(page, "stopped") == 0


def test_a_403_stops_it_and_nothing_more_is_sent(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """The webinar ends while pinging: the ping answers 403 webinar_closed, the client
    stops with that reason and sends no further request."""
    page = open_page(browser, shim)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/rpc/" in r.url else None)
    page.evaluate("(t) => window.start({ token: t })", user_token(shim_db))
    wait_count(page, "ping", 1)
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        conn.execute("update eventlive.webinars set state = 'ended' where id = %s", (WEBINAR,))
    wait_count(page, "stopped", 1)
    stopped = page.evaluate("window.events.find(e => e.type === 'stopped').detail")
    assert stopped == {"reason": "webinar_closed", "status": 403}
    n = len(sent)
    page.wait_for_timeout(1500)  # dozens of heartbeats at this time scale
    assert len(sent) == n
    assert count(page, "backoff") == 0


def test_a_superseded_session_is_announced(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """The same viewer enters on a second device: the first page hears "superseded" and stops."""
    tok = user_token(shim_db)
    first = open_page(browser, shim)
    first.evaluate("(t) => window.start({ token: t })", tok)
    wait_count(first, "ping", 1)
    second = open_page(browser, shim)
    second.evaluate("(t) => window.start({ token: t })", tok)
    wait_count(second, "entered", 1)
    wait_count(first, "superseded", 1)
    assert first.evaluate("window.viewer.state") == "stopped"
    assert second.evaluate("window.viewer.state") == "live"


def test_retry_after_is_honoured_and_a_hidden_tab_pauses(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """A 503 with Retry-After: 40 → the next try is no sooner than 40 s (scaled); a hidden
    tab pauses (no pings), shown again it re-enters and pings."""
    page = open_page(browser, shim)
    page.route(
        "**/rpc/presence_ping",
        lambda route: route.fulfill(status=503, headers={"Retry-After": "40"}, body="{}"),
    )
    page.evaluate(
        """(t) => { window.fakeDoc = new EventTarget(); window.fakeDoc.hidden = false;
                    return window.start({ token: t, document: window.fakeDoc }); }""",
        user_token(shim_db),
    )
    wait_count(page, "backoff", 1)
    delay = page.evaluate("window.events.find(e => e.type === 'backoff').detail.delay")
    assert delay >= 40
    page.unroute("**/rpc/presence_ping")
    wait_count(page, "ping", 1, timeout=10_000)
    page.evaluate(
        "window.fakeDoc.hidden = true; window.fakeDoc.dispatchEvent(new Event('visibilitychange'))"
    )
    wait_count(page, "paused", 1)
    pings = count(page, "ping")
    page.wait_for_timeout(1000)
    assert count(page, "ping") == pings
    page.evaluate(
        "window.fakeDoc.hidden = false; window.fakeDoc.dispatchEvent(new Event('visibilitychange'))"
    )
    wait_count(page, "tracked", 1)
    wait_count(page, "ping", pings + 1)


def test_chat_falls_back_to_polling_behind_a_circuit_breaker(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """No live room here → polling chat_since; 3 failed polls open the circuit (no request
    during the cool-down); then it polls again at the server's poll_after_seconds and
    delivers messages once each, in seq order."""
    page = open_page(browser, shim)
    polls: list[str] = []
    state = {"fail": True}

    def chat_since(route: Any) -> None:
        polls.append(route.request.url)
        if state["fail"]:
            route.fulfill(status=500, body='{"code":"XX000"}')
        else:
            route.fulfill(
                status=200,
                content_type="application/json",
                body='{"messages":[{"id":2,"seq":2,"body":"b"},{"id":1,"seq":1,"body":"a"}],'
                '"next_seq":2,"poll_after_seconds":3}',
            )

    page.route("**/rpc/chat_since*", chat_since)
    page.evaluate(
        "(t) => { window.start({ token: t }); window.chat = window.viewer.chat("
        "{ breakerFailures: 3, breakerCooldown: 100 }); }",
        user_token(shim_db),
    )
    page.wait_for_function(
        "window.events.some(e => e.type === 'mode' && e.detail.mode === 'open')", timeout=15_000
    )
    assert len(polls) == 3
    page.wait_for_timeout(1000)  # half of the 2 s (scaled) cool-down
    assert len(polls) == 3
    state["fail"] = False
    wait_count(page, "messages", 1, timeout=10_000)
    got = page.evaluate(
        "window.events.find(e => e.type === 'messages').detail.messages.map(m => m.seq)"
    )
    assert got == [1, 2]
    page.wait_for_timeout(500)
    assert count(page, "messages") == 1  # the same messages are not delivered twice


def test_chat_without_a_live_room_polls_chat_since_for_real(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """No live room on this shim: after entering, chat() polls the real chat_since and
    delivers a message another viewer sent through chat_send, once."""
    page = open_page(browser, shim)
    page.evaluate(
        "(t) => { window.start({ token: t }); window.chat = window.viewer.chat(); }",
        user_token(shim_db),
    )
    page.wait_for_function(
        "window.events.some(e => e.type === 'mode' && e.detail.mode === 'polling')",
        timeout=15_000,
    )
    other = {"Authorization": f"Bearer {user_token(shim_db)}"}
    with httpx.Client(base_url=shim.base, headers=other) as c:
        assert c.post("/rpc/track_access", json={"webinar_id": WEBINAR}).status_code == 200
        r = c.post("/rpc/chat_send", json={"webinar_id": WEBINAR, "body": "hello from verify"})
        assert r.status_code == 200, r.text
    wait_count(page, "messages", 1)
    got = page.evaluate("window.events.find(e => e.type === 'messages').detail.messages")
    assert [m["body"] for m in got] == ["hello from verify"]
    page.wait_for_timeout(500)
    assert count(page, "messages") == 1


def messages_in_db(shim_db: ShimDb) -> list[tuple[str, str]]:
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select body, client_msg_id::text from eventlive.chat_messages"
            " where webinar_id = %s order by id",
            (WEBINAR,),
        ).fetchall()
    return [(str(b), str(c)) for b, c in rows]


# The outcome of a send or ask as plain data: the receipt, or the EventliveError's fields.
OUTCOME = """async (call) => {
  try { return { ok: await call() }; }
  catch (e) { return { error: { name: e.name, status: e.status, reason: e.reason,
                                retryAfter: e.retryAfter, clientMsgId: e.clientMsgId,
                                message: e.message } }; }
}"""


def outcome(page: Any, js: str, arg: Any = None) -> Any:
    """Run ``js`` (an expression using ``arg``) through OUTCOME in the page."""
    return page.evaluate(f"(arg) => ({OUTCOME})(() => {js})", arg)


def test_a_viewer_sends_and_asks_through_the_module(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """send() right after join (before the entry answered: it waits for it) posts a chat
    message with a UUID client_msg_id the module made; ask() posts an anonymous
    question; both resolve with the server's receipt and fire "sent"."""
    page = open_page(browser, shim)
    page.evaluate("(t) => window.start({ token: t })", user_token(shim_db))
    got = outcome(page, "window.viewer.send('hello from the module')")
    assert set(got["ok"]) == {"id", "seq", "created_at", "status"}, got
    assert got["ok"]["status"] == "visible"
    asked = outcome(page, "window.viewer.ask('why?', { anonymous: true })")
    assert asked["ok"]["status"] == "open", asked
    ((body, client_msg_id),) = messages_in_db(shim_db)
    assert body == "hello from the module"
    assert uuid.UUID(client_msg_id).version == 4
    with psycopg.connect(shim_db.admin_dsn, autocommit=True) as conn:
        assert conn.execute(
            "select body, anonymous, client_msg_id is not null from eventlive.questions"
            " where webinar_id = %s",
            (WEBINAR,),
        ).fetchall() == [("why?", True, True)]
    sent = page.evaluate("window.events.filter(e => e.type === 'sent').map(e => e.detail.fn)")
    assert sent == ["chat_send", "question_ask"]


def test_a_retry_of_a_send_whose_answer_was_lost_does_not_duplicate(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """The first chat_send reaches the shim (the message is stored) but its answer is
    lost: the promise rejects (status 0, reason network). Sending the same text again
    is a retry with the same client_msg_id: the shim answers the stored message, one row.
    Once it succeeded, the same text again is a new message with a new id."""
    page = open_page(browser, shim)
    seen: list[str] = []

    def lose_the_first_answer(route: Any) -> None:
        seen.append(json.loads(route.request.post_data)["client_msg_id"])
        if len(seen) == 1:
            route.fetch()  # the shim stores the message...
            route.abort()  # ...and the browser never hears back
        else:
            route.continue_()

    page.route("**/rpc/chat_send", lose_the_first_answer)
    page.evaluate("(t) => window.start({ token: t })", user_token(shim_db))
    wait_count(page, "entered", 1)
    first = outcome(page, "window.viewer.send('only once')")
    assert first["error"]["status"] == 0, first
    assert first["error"]["reason"] == "network"
    assert messages_in_db(shim_db) == [("only once", seen[0])]  # it was stored
    retried = outcome(page, "window.viewer.send('only once')")
    assert "ok" in retried, retried
    assert seen[1] == seen[0] == first["error"]["clientMsgId"]
    assert messages_in_db(shim_db) == [("only once", seen[0])]  # no duplicate
    again = outcome(page, "window.viewer.send('only once')")
    assert again["ok"]["id"] != retried["ok"]["id"]
    assert seen[2] != seen[0]
    assert [b for b, _ in messages_in_db(shim_db)] == ["only once", "only once"]
    failed = page.evaluate(
        "window.events.filter(e => e.type === 'send_failed').map(e => e.detail.error.reason)"
    )
    assert failed == ["network"]


def test_a_rate_limited_send_rejects_with_retry_after_and_the_viewer_goes_on(
    browser: Any, shim: ShimProcess, shim_db: ShimDb
) -> None:
    """Six messages in a row: the sixth is refused 429 rate_limited (5 per 30 s) and
    rejects with the server's Retry-After; an empty one rejects 400 empty_message; the
    viewer keeps pinging (a refused message never stops it)."""
    page = open_page(browser, shim)
    page.evaluate("(t) => window.start({ token: t })", user_token(shim_db))
    wait_count(page, "entered", 1)
    for n in range(5):
        assert "ok" in outcome(page, "window.viewer.send(arg)", f"message {n}")
    limited = outcome(page, "window.viewer.send('one too many')")
    assert limited["error"]["status"] == 429, limited
    assert limited["error"]["reason"] == "rate_limited"
    assert limited["error"]["retryAfter"] >= 1
    assert limited["error"]["name"] == "EventliveError"
    empty = outcome(page, "window.viewer.send('   ')")
    assert (empty["error"]["status"], empty["error"]["reason"]) == (400, "empty_message")
    pings = count(page, "ping")
    wait_count(page, "ping", pings + 1)
    assert page.evaluate("window.viewer.state") == "live"
    assert count(page, "stopped") == 0
    assert len(messages_in_db(shim_db)) == 5
