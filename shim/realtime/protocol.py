"""Phoenix-channel frames as Supabase Realtime speaks them (``vsn`` 1.0.0 and 2.0.0).

- 1.0.0: a JSON object ``{"topic","event","payload","ref","join_ref"?}`` per text frame
  (Phoenix's V1 serializer: ``ref`` required, ``join_ref`` optional; replies and pushes
  carry ``topic``, ``event``, ``payload``, ``ref`` only).
- 2.0.0: a JSON array ``[join_ref, ref, topic, event, payload]`` per text frame, plus the
  binary frames of Supabase's ``V2Serializer``: kind 0 (push, client -> server), kind 3
  (user broadcast push, client -> server: realtime-js sends ``channel.send`` this way) and
  kind 4 (user broadcast, server -> client). Sizes are one byte each, so topic, event,
  join_ref and ref are at most 255 bytes.

``decode`` never raises anything but ``FrameError``, which carries the ``ref`` it could
read (or None) so the socket answers on that ref and stays open.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

V1 = "1.0.0"
V2 = "2.0.0"
VERSIONS = (V1, V2)

# The longest broadcast event name carried (eventlive.broadcast, sql/0009).
MAX_EVENT = 255

# Binary frame kinds (Supabase's RealtimeWeb.Socket.V2Serializer).
KIND_PUSH = 0
KIND_REPLY = 1
KIND_BROADCAST = 2
KIND_USER_BROADCAST_PUSH = 3
KIND_USER_BROADCAST = 4

Encoded = str | bytes


class FrameError(ValueError):
    """A frame that cannot be read; ``ref``/``topic`` are what could be read of it."""

    def __init__(self, message: str, ref: str | None = None, topic: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref
        self.topic = topic


@dataclass(frozen=True, slots=True)
class Frame:
    """One client message. For a binary user broadcast, ``payload`` is the broadcast
    envelope ``{"type":"broadcast","event",...,"payload"}`` as a JSON client would send it,
    with the user payload decoded from JSON (or kept as bytes when sent as binary)."""

    topic: str
    event: str
    payload: Any
    ref: str | None
    join_ref: str | None
    binary: bool = False


def _ref(value: Any) -> str | None:
    # Phoenix refs are strings; some clients send numbers. Anything else is no ref.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys (as the HTTP side reads bodies)."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 characters kept as they are."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def decode(data: str | bytes, vsn: str) -> Frame:
    """One frame from the wire (text or binary), or ``FrameError``."""
    if isinstance(data, bytes):
        if vsn != V2:
            raise FrameError("binary frames need vsn 2.0.0")
        return _decode_binary(data)
    try:
        raw = loads(data)
    except (ValueError, RecursionError):
        raise FrameError("malformed JSON") from None
    if vsn == V2:
        if not isinstance(raw, list) or len(raw) < 5:
            ref = _ref(raw[1]) if isinstance(raw, list) and len(raw) > 1 else None
            raise FrameError("expected a [join_ref, ref, topic, event, payload] array", ref)
        join_ref, ref, topic, event, payload = raw[:5]
    else:
        if not isinstance(raw, dict):
            raise FrameError("expected a JSON object")
        ref = raw.get("ref")
        join_ref = raw.get("join_ref")
        topic, event, payload = raw.get("topic"), raw.get("event"), raw.get("payload")
    ref_s = _ref(ref)
    if not isinstance(topic, str) or not topic:
        raise FrameError("topic must be a non-empty string", ref_s)
    if not isinstance(event, str) or not event:
        raise FrameError("event must be a non-empty string", ref_s, topic)
    if not isinstance(payload, dict):
        raise FrameError("payload must be a JSON object", ref_s, topic)
    return Frame(topic, event, payload, ref_s, _ref(join_ref))


_V2_HEAD = re.compile(r'\[\s*(?:null|"[^"\\]{0,255}")\s*,\s*("([^"\\]{0,255})"|null)')


def head_ref(data: str | bytes, vsn: str) -> str | None:
    """The ref of a frame too large to parse: read off a 2.0.0 text frame's head only."""
    if isinstance(data, str) and vsn == V2:
        m = _V2_HEAD.match(data[:700])
        return m.group(2) if m else None
    return None


def _decode_binary(data: bytes) -> Frame:
    if not data:
        raise FrameError("empty binary frame")
    kind = data[0]
    try:
        if kind == KIND_USER_BROADCAST_PUSH:
            return _decode_user_broadcast_push(data)
        if kind == KIND_PUSH:
            return _decode_push(data)
    except (IndexError, UnicodeDecodeError):
        raise FrameError("truncated or undecodable binary frame") from None
    raise FrameError(f"unknown binary frame kind {kind}")


def _take(data: bytes, offset: int, size: int) -> tuple[str, int]:
    end = offset + size
    if end > len(data):
        raise IndexError("frame shorter than its sizes")
    return data[offset:end].decode("utf-8"), end


def _decode_push(data: bytes) -> Frame:
    join_ref_size, ref_size, topic_size, event_size = data[1], data[2], data[3], data[4]
    join_ref, o = _take(data, 5, join_ref_size)
    ref, o = _take(data, o, ref_size)
    topic, o = _take(data, o, topic_size)
    event, o = _take(data, o, event_size)
    # A binary push carries opaque bytes; no event of ours takes them.
    return Frame(topic, event, {"binary": data[o:]}, ref or None, join_ref or None, binary=True)


def _decode_user_broadcast_push(data: bytes) -> Frame:
    join_ref_size, ref_size, topic_size, event_size = data[1], data[2], data[3], data[4]
    meta_size, encoding = data[5], data[6]
    join_ref, o = _take(data, 7, join_ref_size)
    ref, o = _take(data, o, ref_size)
    topic, o = _take(data, o, topic_size)
    user_event, o = _take(data, o, event_size)
    meta_text, o = _take(data, o, meta_size)
    body = data[o:]
    ref_s = ref or None
    try:
        meta = loads(meta_text) if meta_size else {}
        user_payload: Any = loads(body) if encoding == 1 else body
    except ValueError:
        raise FrameError("malformed JSON in a binary broadcast", ref_s, topic) from None
    envelope: dict[str, Any] = {"type": "broadcast", "event": user_event, "payload": user_payload}
    if meta:
        envelope["meta"] = meta
    return Frame(topic, "broadcast", envelope, ref_s, join_ref or None, binary=True)


def _size(value: bytes, what: str) -> int:
    if len(value) > 255:
        raise ValueError(f"{what} over 255 bytes")
    return len(value)


def encode(
    vsn: str,
    topic: str,
    event: str,
    payload: Any,
    *,
    join_ref: str | None = None,
    ref: str | None = None,
) -> str:
    """A server message as text for ``vsn``."""
    if vsn == V2:
        return dumps([join_ref, ref, topic, event, payload])
    return dumps({"topic": topic, "event": event, "payload": payload, "ref": ref})


def encode_raw(
    vsn: str,
    topic: str,
    event: str,
    payload_json: str,
    *,
    join_ref: str | None = None,
    ref: str | None = None,
) -> str:
    """Like ``encode`` with the payload already JSON text (the hub splices a row's payload
    into the frame without parsing it again)."""
    if vsn == V2:
        return f"[{dumps(join_ref)},{dumps(ref)},{dumps(topic)},{dumps(event)},{payload_json}]"
    return f'{{"topic":{dumps(topic)},"event":{dumps(event)},"payload":{payload_json},"ref":{dumps(ref)}}}'


def reply(
    vsn: str,
    topic: str,
    status: str,
    response: Any,
    *,
    join_ref: str | None = None,
    ref: str | None = None,
) -> str:
    """``phx_reply`` with ``{"status", "response"}``."""
    return encode(
        vsn,
        topic,
        "phx_reply",
        {"status": status, "response": response},
        join_ref=join_ref,
        ref=ref,
    )


def broadcast_json(vsn: str, topic: str, event: str, payload_json: str) -> str:
    """A broadcast as Supabase pushes one to every subscriber (fastlane: no refs)."""
    envelope = f'{{"type":"broadcast","event":{dumps(event)},"payload":{payload_json}}}'
    return encode_raw(vsn, topic, "broadcast", envelope)


def user_broadcast_binary(topic: str, event: str, payload: bytes, *, json_payload: bool) -> bytes:
    """Kind 4: a user broadcast to a 2.0.0 client (how Supabase relays a binary push)."""
    t, e = topic.encode(), event.encode()
    header = bytes(
        [KIND_USER_BROADCAST, _size(t, "topic"), _size(e, "event"), 0, int(json_payload)]
    )
    return header + t + e + payload


def user_broadcast_push_binary(
    join_ref: str, ref: str, topic: str, event: str, payload: bytes, *, json_payload: bool = True
) -> bytes:
    """Kind 3, as realtime-js sends ``channel.send({type:'broadcast'})`` on 2.0.0 (tests)."""
    parts = [x.encode() for x in (join_ref, ref, topic, event)]
    sizes = [_size(p, "field") for p in parts]
    return (
        bytes([KIND_USER_BROADCAST_PUSH, *sizes, 0, int(json_payload)]) + b"".join(parts) + payload
    )
