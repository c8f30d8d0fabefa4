"""The frame layer (``shim.realtime.protocol``) against the formats the clients use:
Phoenix's V1 JSON objects (realtime-py), V2 JSON arrays and Supabase's binary frames
(realtime-js: ``RealtimeWeb.Socket.V2Serializer`` kinds 3 and 4, byte for byte)."""

from __future__ import annotations

import json

import pytest

from shim.realtime import protocol
from shim.realtime.protocol import V1, V2, FrameError


def test_v1_object_is_read_with_ref_and_join_ref() -> None:
    """A 1.0.0 frame is a JSON object; ref and join_ref are kept as strings."""
    raw = json.dumps(
        {
            "topic": "realtime:a",
            "event": "phx_join",
            "payload": {"x": 1},
            "ref": "3",
            "join_ref": "3",
        }
    )
    f = protocol.decode(raw, V1)
    assert (f.topic, f.event, f.payload, f.ref, f.join_ref) == (
        "realtime:a",
        "phx_join",
        {"x": 1},
        "3",
        "3",
    )


def test_v2_array_is_read_in_its_order() -> None:
    """A 2.0.0 frame is [join_ref, ref, topic, event, payload]."""
    f = protocol.decode('["1","2","realtime:t","broadcast",{"a":1}]', V2)
    assert (f.join_ref, f.ref, f.topic, f.event, f.payload) == (
        "1",
        "2",
        "realtime:t",
        "broadcast",
        {"a": 1},
    )


def test_replies_are_written_as_each_version_expects() -> None:
    """phx_reply carries {status, response}; 1.0.0 as an object without join_ref (Phoenix
    V1), 2.0.0 as an array with both refs."""
    v1 = json.loads(protocol.reply(V1, "phoenix", "ok", {}, ref="7"))
    assert v1 == {
        "topic": "phoenix",
        "event": "phx_reply",
        "payload": {"status": "ok", "response": {}},
        "ref": "7",
    }
    v2 = json.loads(
        protocol.reply(V2, "realtime:t", "error", {"reason": "x"}, join_ref="1", ref="2")
    )
    assert v2 == [
        "1",
        "2",
        "realtime:t",
        "phx_reply",
        {"status": "error", "response": {"reason": "x"}},
    ]


def test_broadcast_frame_splices_the_payload_text_unchanged() -> None:
    """The hub writes a row's payload JSON into the frame without re-encoding it; the
    result is the broadcast envelope Supabase pushes ({type, event, payload})."""
    payload = '{"seq": 5, "body": "h\\u00e9 \\"q\\""}'
    v2 = json.loads(protocol.broadcast_json(V2, "realtime:webinar:1:chat", "message", payload))
    assert v2 == [
        None,
        None,
        "realtime:webinar:1:chat",
        "broadcast",
        {"type": "broadcast", "event": "message", "payload": {"seq": 5, "body": 'hé "q"'}},
    ]
    v1 = json.loads(protocol.broadcast_json(V1, "realtime:webinar:1:chat", "message", payload))
    assert v1["ref"] is None
    assert v1["payload"]["payload"]["seq"] == 5


def test_binary_user_broadcast_push_as_realtime_js_sends_it() -> None:
    """Kind 3: header sizes, then join_ref, ref, topic, event, metadata, payload; JSON
    encoding flag 1. Decoded to the same envelope a JSON client sends."""
    frame = protocol.user_broadcast_push_binary(
        "1", "5", "realtime:webinar:1:chat", "hi", b'{"a":1}'
    )
    assert frame[:7] == bytes([3, 1, 1, 23, 2, 0, 1])
    f = protocol.decode(frame, V2)
    assert f.binary
    assert (f.join_ref, f.ref, f.topic, f.event) == (
        "1",
        "5",
        "realtime:webinar:1:chat",
        "broadcast",
    )
    assert f.payload == {"type": "broadcast", "event": "hi", "payload": {"a": 1}}


def test_binary_user_broadcast_to_a_client_has_kind_4_layout() -> None:
    """Kind 4 (server -> client): kind, topic size, event size, metadata size, encoding."""
    out = protocol.user_broadcast_binary("realtime:t", "ev", b'{"x":2}', json_payload=True)
    assert out[:5] == bytes([4, 10, 2, 0, 1])
    assert out[5:] == b"realtime:tev" + b'{"x":2}'


@pytest.mark.parametrize(
    ("data", "vsn", "ref"),
    [
        ("not json", V1, None),
        ("[1,2,3]", V1, None),
        ('{"topic":"t","event":"e","payload":[],"ref":"9"}', V1, "9"),
        ('["1","4","t"]', V2, "4"),
        ('["1","4","","e",{}]', V2, "4"),
        ('["1","4","t","e",{"a":NaN}]', V2, None),
        ('{"topic":"t","topic":"u","event":"e","payload":{},"ref":"1"}', V1, None),
        (b"\x03\x01\x01\xff\x02\x00\x01abc", V2, None),
        (b"\x09", V2, None),
        (b"\x03", V1, None),
    ],
)
def test_unreadable_frames_raise_frame_error_with_the_ref_that_could_be_read(
    data: str | bytes, vsn: str, ref: str | None
) -> None:
    """Malformed JSON, wrong shapes, NaN, duplicate keys, truncated or unknown binary
    frames: always ``FrameError`` (never another exception), carrying the readable ref."""
    with pytest.raises(FrameError) as err:
        protocol.decode(data, vsn)
    assert err.value.ref == ref
