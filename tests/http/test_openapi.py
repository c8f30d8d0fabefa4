"""``/openapi.json`` for typed clients, over the real ``api`` schema: a valid OpenAPI 3.1
document (``openapi-spec-validator``) with ``servers`` and both prefixes (``/rpc`` and
``/rest/v1/rpc``); every json function's answer described from its comment's
``@returns`` (consistent with its "Returns" sentence); the real answers of every api
function match their description with no undocumented key; and a generator
(``datamodel-code-generator``) turns the document into types that name the fields and
read those answers."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
from openapi_spec_validator import validate
from shim_support import SECRET, bearer, serve, settings_for, token

from shim.http.openapi import ShapeError, parse_shape, returns_shape

pytestmark = pytest.mark.anyio

WEBINAR = 149402


def api_settings(eventlive_db: Any) -> Any:
    return settings_for(eventlive_db.dsn, schemas=("api",), jwt_secret=SECRET)


async def read_document(eventlive_db: Any) -> dict[str, Any]:
    async with serve(api_settings(eventlive_db)) as client:
        r = await client.get("/openapi.json")
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc


def result_schema(doc: dict[str, Any], path: str, method: str = "post") -> dict[str, Any]:
    """The 200 answer's schema of one operation, its ``$ref`` resolved."""
    content = doc["paths"][path][method]["responses"]["200"]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    ref = schema.get("$ref")
    if ref:
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def strict(schema: Any) -> Any:
    """``schema`` with no key beyond the documented ones, at every level."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out:
        out["additionalProperties"] = False
    return out


async def test_the_document_is_valid_openapi_with_servers_and_both_prefixes(
    eventlive_db: Any,
) -> None:
    """openapi-spec-validator accepts it; ``servers`` is there; each ``/rpc/{fn}`` has
    its ``/rest/v1/rpc/{fn}`` twin with the same methods and answers; operationIds are
    unique (generators name methods after them)."""
    doc = await read_document(eventlive_db)
    validate(doc)  # raises on an invalid document
    assert doc["servers"]
    assert doc["servers"][0]["url"] == "/"
    rpc = sorted(p for p in doc["paths"] if p.startswith("/rpc/"))
    rest = sorted(p for p in doc["paths"] if p.startswith("/rest/v1/rpc/"))
    assert "/rpc/chat_send" in rpc
    assert rest == ["/rest/v1" + p for p in rpc]
    assert len(doc["paths"]) == len(rpc) + len(rest)
    for p in rpc:
        twin = doc["paths"]["/rest/v1" + p]
        assert set(twin) == set(doc["paths"][p])
        for method, op in doc["paths"][p].items():
            assert twin[method]["responses"] == op["responses"]
            assert not any(line.startswith("@") for line in op.get("description", "").splitlines())
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    broken = copy.deepcopy(doc)
    broken["paths"]["/rpc/chat_send"]["post"]["responses"] = "none"
    with pytest.raises(Exception, match=r"responses|none"):
        validate(broken)


def sentence_fields(comment: str) -> set[str] | None:
    """Top-level field names of a comment's "Returns a, b, c." or "Returns {a, b: …}"
    sentence; None when it has neither form ("Returns the question.")."""
    item = r"[a-z_]+(?: \([^)]*\))?"
    m = re.search(rf"\bReturns (\{{.*?\}})[;.,]? |\bReturns ((?:{item}, )+{item})\.", comment)
    if m is None:
        return None
    if m.group(2):
        return {re.sub(r" \(.*", "", part) for part in m.group(2).split(", ")}
    inner = m.group(1)[1:-1]
    while re.search(r"[{\[][^{}\[\]]*[}\]]", inner):  # drop nested shapes, innermost first
        inner = re.sub(r"[{\[][^{}\[\]]*[}\]]", "", inner)
    return {part.split(":")[0].strip() for part in inner.split(",")}


async def test_every_json_function_documents_its_result_as_its_comment_says(
    eventlive_db: Any,
) -> None:
    """Each api function answering JSON has an ``@returns`` that reads, named as a
    component; the fields its "Returns" sentence names are among the documented ones
    (the sentence and the tag cannot drift apart unnoticed)."""
    doc = await read_document(eventlive_db)
    with psycopg.connect(eventlive_db.admin_dsn) as conn:
        rows = conn.execute(
            "select p.proname, obj_description(p.oid, 'pg_proc') from pg_proc p"
            " where p.pronamespace = 'api'::regnamespace"
            " and p.prorettype in ('json'::regtype, 'jsonb'::regtype) order by 1"
        ).fetchall()
    assert len(rows) >= 15
    checked = 0
    for name, comment in rows:
        shape = returns_shape(comment)
        assert shape is not None, f"api.{name}: no @returns line in its comment"
        ref = doc["paths"][f"/rpc/{name}"]["post"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        assert "$ref" in ref, (name, ref)
        schema = result_schema(doc, f"/rpc/{name}")
        assert schema.get("properties") or schema.get("items", {}).get("properties"), name
        listed = sentence_fields(comment)
        if listed is not None:
            documented = set(schema.get("properties") or schema["items"]["properties"])
            assert listed <= documented, (name, listed - documented)
            checked += 1
    assert checked >= 10


def test_the_returns_notation() -> None:
    """Objects with optional keys, arrays, nullable types, string values; errors said."""
    s = parse_shape("{id: bigint, at?: timestamptz|null, tags: [text], status: open|closed|null}")
    assert s["required"] == ["id", "tags", "status"]
    assert s["properties"]["id"] == {"type": "integer", "format": "int64"}
    assert s["properties"]["at"] == {"type": ["string", "null"], "format": "date-time"}
    assert s["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    assert s["properties"]["status"] == {
        "type": ["string", "null"],
        "enum": ["open", "closed", None],
    }
    assert parse_shape("[{a: uuid}]|null")["type"] == ["array", "null"]
    for bad in (
        "{id: bigint",
        "{id: bigint,}",
        "{a: text|uuid|x}",
        "[text",
        "{a: b} extra",
        "{a: !}",
    ):
        with pytest.raises(ShapeError):
            parse_shape(bad)
    assert returns_shape("Does x.\n@cache 2\n@returns {a: text}") == "{a: text}"


def user(admin_dsn: str, name: str) -> str:
    uid = str(uuid.uuid4())
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("insert into auth.users (id) values (%s)", (uid,))
        conn.execute(
            "insert into eventlive.profiles (user_id, display_name) values (%s, %s)"
            " on conflict (user_id) do update set display_name = excluded.display_name",
            (uid, name),
        )
    return uid


async def real_answers(eventlive_db: Any) -> list[tuple[str, Any]]:
    """One real answer (200) of every api function returning JSON, and of the forms the
    notation marks optional: a hidden message and a dismissed question seen by a viewer,
    a held one by staff, an anonymous question."""
    admin = eventlive_db.admin_dsn
    viewer, host = user(admin, "Vera Viewer"), user(admin, "Hal Host")
    service = bearer(token({"role": "service_role", "sub": None, "aud": None}))
    v, h = bearer(token({"sub": viewer})), bearer(token({"sub": host}))
    got: list[tuple[str, Any]] = []
    async with serve(api_settings(eventlive_db)) as c:

        async def call(
            fn: str, args: dict[str, Any], who: dict[str, str], get: bool = False
        ) -> Any:
            if get:
                r = await c.get(f"/rest/v1/rpc/{fn}", params=args, headers=who)
            else:
                r = await c.post(f"/rpc/{fn}", json=args, headers=who)
            assert r.status_code == 200, (fn, r.status_code, r.text)
            got.append((fn, r.json()))
            return r.json()

        await call("upsert_webinar", {"webinar_id": WEBINAR, "title": "Typed"}, service)
        assert (
            await c.post(
                "/rpc/set_staff", json={"webinar_id": WEBINAR, "user_id": host}, headers=service
            )
        ).status_code == 204
        await call("register", {"webinar_id": WEBINAR}, v)
        entered = await call("track_access", {"webinar_id": WEBINAR}, v)
        await call("track_access", {"webinar_id": WEBINAR, "session_id": entered["session_id"]}, v)
        await call("track_access", {"webinar_id": WEBINAR}, h)
        await call("access_stats", {"webinar_id": WEBINAR}, h, get=True)
        await call("participants", {"webinar_id": WEBINAR, "max_rows": 1}, h)
        await call("profiles_batch", {"user_ids": [viewer, host]}, h)
        sent = await call(
            "chat_send",
            {"webinar_id": WEBINAR, "body": "hi", "client_msg_id": str(uuid.uuid4())},
            v,
        )
        await call("chat_moderate", {"message_id": sent["id"], "action": "hide"}, h)
        await call("room_settings", {"webinar_id": WEBINAR, "hold_for_review": True}, h)
        await call(
            "chat_send",
            {"webinar_id": WEBINAR, "body": "held", "client_msg_id": str(uuid.uuid4())},
            v,
        )
        await call("chat_since", {"webinar_id": WEBINAR}, v, get=True)
        await call("chat_since", {"webinar_id": WEBINAR}, h, get=True)
        q = await call(
            "question_ask", {"webinar_id": WEBINAR, "body": "why?", "anonymous": True}, v
        )
        q2 = await call("question_ask", {"webinar_id": WEBINAR, "body": "how?"}, v)
        await call("question_vote", {"question_id": q["id"]}, v)
        await call(
            "question_answer",
            {"question_id": q["id"], "status": "answered", "answer": "because"},
            h,
        )
        await call("question_answer", {"question_id": q2["id"], "status": "dismissed"}, h)
        await call("questions", {"webinar_id": WEBINAR}, v, get=True)
        await call("questions", {"webinar_id": WEBINAR}, h, get=True)
        await call("chat_ban", {"webinar_id": WEBINAR, "user_id": viewer, "minutes": 5}, h)
    return got


async def test_real_answers_match_their_documented_result_with_no_undocumented_key(
    eventlive_db: Any,
) -> None:
    """Every api function that answers JSON, called for real: its answer validates
    against its documented result with every level closed (a key the comment forgot, a
    wrong type or a value outside the listed ones fails); and the check can fail."""
    doc = await read_document(eventlive_db)
    answers = await real_answers(eventlive_db)
    with psycopg.connect(eventlive_db.admin_dsn) as conn:
        json_functions = {
            name
            for (name,) in conn.execute(
                "select proname from pg_proc where pronamespace = 'api'::regnamespace"
                " and prorettype in ('json'::regtype, 'jsonb'::regtype)"
            )
        }
    assert json_functions <= {fn for fn, _ in answers}, json_functions - {fn for fn, _ in answers}
    messages = [m for fn, a in answers if fn == "chat_since" for m in a["messages"]]
    assert any(m.get("hidden") for m in messages)  # a viewer's tombstone
    assert any(m.get("held") for m in messages)  # staff see held ones
    questions = [q for fn, a in answers if fn == "questions" for q in a["questions"]]
    assert any("body" not in q for q in questions)  # a viewer's tombstone
    for fn, answer in answers:
        jsonschema.validate(answer, strict(result_schema(doc, f"/rpc/{fn}")))
    receipt = next(a for fn, a in answers if fn == "chat_send")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**receipt, "extra": 1}, strict(result_schema(doc, "/rpc/chat_send")))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**receipt, "status": "lost"}, strict(result_schema(doc, "/rpc/chat_send"))
        )


async def test_generated_models_name_the_fields_and_read_real_answers(
    eventlive_db: Any, tmp_path: Path
) -> None:
    """``datamodel-codegen`` over the document: a model per function result whose fields
    are the documented names, and which parses the function's real answer."""
    doc = await read_document(eventlive_db)
    answers = await real_answers(eventlive_db)
    source = tmp_path / "openapi.json"
    source.write_text(httpx.Response(200, json=doc).text)
    target = tmp_path / "eventlive_models.py"
    subprocess.run(
        [
            sys.executable, "-m", "datamodel_code_generator",
            "--input", str(source), "--input-file-type", "openapi",
            "--output", str(target), "--output-model-type", "pydantic_v2.BaseModel",
            "--disable-timestamp",
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    spec = importlib.util.spec_from_file_location("eventlive_models", target)
    assert spec is not None
    assert spec.loader is not None
    models = importlib.util.module_from_spec(spec)
    sys.modules["eventlive_models"] = models
    try:
        spec.loader.exec_module(models)
        receipt = models.ChatSendResult
        assert set(receipt.model_fields) == {"id", "seq", "created_at", "status"}
        assert set(models.TrackAccessResult.model_fields) >= {"session_id", "first_ping_in"}
        assert "next_seq" in models.ChatSinceResult.model_fields
        by_name = {
            "".join(p.capitalize() for p in fn.split("_")) + "Result": answer
            for fn, answer in answers
        }
        for name, answer in by_name.items():
            model = getattr(models, name)
            if isinstance(answer, list):  # a RootModel over an array
                model.model_validate(answer)
            else:
                parsed = model.model_validate(answer)
                assert set(parsed.model_dump(exclude_unset=True)) == set(answer), name
        typed = receipt.model_validate(next(a for fn, a in answers if fn == "chat_send"))
        assert isinstance(typed.id, int)
        assert typed.created_at.year >= 2024  # a datetime, not a string
    finally:
        del sys.modules["eventlive_models"]
