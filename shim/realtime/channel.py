"""A joined channel of one connection: its topic, join ref, token, what the policies
allowed (receive at join; send checked lazily, at the first client broadcast) and the
timer that closes it when its token expires."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shim.realtime import topics
from shim.realtime.authorize import Principal


@dataclass
class Channel:
    """A joined channel of this connection."""

    topic: topics.Topic
    join_ref: str | None
    principal: Principal
    token: str | None
    ack: bool
    self_broadcast: bool
    may_send: bool | None = None
    expiry: asyncio.TimerHandle | None = None


def unauthorized(topic: topics.Topic) -> str:
    return (
        f"Unauthorized: You do not have permissions to read from this Channel topic: {topic.name}"
    )
