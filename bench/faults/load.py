"""Viewers: one token each, retried as a front end should, every attempt recorded."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field

import httpx
import jwt

from bench.faults.harness import CLIENT_TIMEOUT, SECRET

# -- viewers ------------------------------------------------------------------------------


def tokens(user_ids: list[str]) -> list[str]:
    """One HS256 token per viewer, valid for an hour."""
    now = int(time.time())
    return [
        jwt.encode(
            {
                "sub": u,
                "role": "authenticated",
                "aud": "authenticated",
                "iat": now,
                "exp": now + 3600,
            },
            SECRET,
            algorithm="HS256",
        )
        for u in user_ids
    ]


@dataclass(frozen=True)
class Attempt:
    """One request: when it was sent (seconds since the run's start), how long it took,
    and what came back: ``kind`` is ``http`` (``status`` set), ``refused``, ``dropped``
    (connection reset or closed mid-request) or ``timeout`` (no answer in 30 s)."""

    viewer: int
    sent: float
    latency: float
    kind: str
    status: int = 0
    code: str = ""
    retry_after: str | None = None
    server: float = 0.0  # the shim's own time (Server-Timing total), seconds
    auto_registered: bool | None = None  # a 2xx's answer: False = an earlier attempt had
    # registered this viewer already (committed, though its client never heard so)

    @property
    def ok(self) -> bool:
        return self.kind == "http" and 200 <= self.status < 300

    @property
    def outcome(self) -> str:
        return str(self.status) if self.kind == "http" else self.kind


@dataclass
class Load:
    """Viewers entering the webinar, each until acknowledged (or out of attempts/time).

    ``rate`` (viewers/s) paces first attempts; ``None`` sends them all at once, limited by
    ``concurrency`` open requests (the join storm).
    """

    base: str
    webinar: int
    tokens: list[str]
    rate: float | None = None
    concurrency: int = 32
    max_attempts: int = 200
    deadline: float = 60.0  # seconds from the start: no new attempt after it
    attempts: list[Attempt] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    @property
    def acknowledged(self) -> set[int]:
        return {a.viewer for a in self.attempts if a.ok}

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self) -> None:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(
            base_url=self.base, limits=limits, timeout=CLIENT_TIMEOUT
        ) as client:
            await asyncio.gather(*(self._viewer(client, sem, i) for i in range(len(self.tokens))))

    async def _viewer(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, i: int) -> None:
        if self.rate:
            await asyncio.sleep(max(0.0, i / self.rate - self.now()))
        headers = {"Authorization": f"Bearer {self.tokens[i]}", "Content-Type": "application/json"}
        path = f"/api/webinars/{self.webinar}/access/track"
        for _ in range(self.max_attempts):
            async with sem:
                a = await _attempt(client, path, headers, i, self.t0)
            self.attempts.append(a)
            if a.ok or (a.kind == "http" and a.status != 503) or self.now() > self.deadline:
                return  # acknowledged, or the client's fault (4xx: retrying cannot help)
            pause = float(a.retry_after or 0.2) if a.kind == "http" else 0.2
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))  # noqa: S311 - jitter


async def _attempt(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], viewer: int, t0: float
) -> Attempt:
    sent = time.monotonic()
    try:
        r = await client.post(path, headers=headers, content=b"{}")
    except httpx.ConnectError:
        return Attempt(viewer, sent - t0, time.monotonic() - sent, "refused")
    except httpx.TimeoutException:
        return Attempt(viewer, sent - t0, time.monotonic() - sent, "timeout")
    except httpx.TransportError:
        return Attempt(viewer, sent - t0, time.monotonic() - sent, "dropped")
    code = ""
    auto: bool | None = None
    if 200 <= r.status_code < 300:
        with contextlib.suppress(ValueError, AttributeError):
            auto = bool(r.json().get("auto_registered"))
    timing = r.headers.get("server-timing", "")
    server = float(timing.rpartition("total;dur=")[2] or 0) / 1000
    if r.status_code >= 400:
        with contextlib.suppress(ValueError, AttributeError):
            code = str(r.json().get("code", ""))
    return Attempt(
        viewer,
        sent - t0,
        time.monotonic() - sent,
        "http",
        r.status_code,
        code,
        r.headers.get("retry-after"),
        server,
        auto,
    )
