"""The topics the hub serves: ``webinar:{id}:chat|qa|admin|user:{uuid}``.

On the wire clients put ``realtime:`` before them (realtime-js and realtime-py both do);
``room_events.channel`` holds the part after ``webinar:{id}:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "realtime:"

_TOPIC = re.compile(
    r"webinar:([1-9][0-9]{0,17}):(chat|qa|admin|user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
CHANNELS = ("chat", "qa", "admin")
MAX_WEBINAR_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: ``name`` is what the policies see as ``realtime.topic()``."""

    webinar_id: int
    channel: str

    @property
    def name(self) -> str:
        return f"webinar:{self.webinar_id}:{self.channel}"

    @property
    def wire(self) -> str:
        return PREFIX + self.name


def parse(name: str) -> Topic | None:
    """The topic for ``webinar:...`` (without the ``realtime:`` prefix), or None."""
    m = _TOPIC.fullmatch(name)
    if m is None:
        return None
    webinar_id = int(m.group(1))
    if webinar_id > MAX_WEBINAR_ID:
        return None
    return Topic(webinar_id, m.group(2))
