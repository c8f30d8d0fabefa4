"""What a scenario counted: acknowledged against stored, error latencies, recovery."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.faults.harness import Database
from bench.faults.load import Load

# -- results ------------------------------------------------------------------------------


@dataclass
class FaultResult:
    """Figures of one scenario (``line()`` is the summary the tests and the table print)."""

    name: str
    viewers: int
    acknowledged: int
    stored: int
    lost: int  # acknowledged, not stored: must be 0
    duplicates: int  # viewers with more than one registration row: must be 0
    outcomes: dict[str, int]  # attempts by HTTP status or refused/dropped/timeout
    max_error_latency: float  # slowest attempt that did not end in a 2xx, as the client saw it
    max_error_server: float  # the same, the shim's own time (Server-Timing) of error answers
    p99_ok_latency: float
    fault_seconds: float
    recovery_seconds: float | None  # end of the fault -> first 2xx completed after it
    bad_503s: int = 0  # 503s without Retry-After
    # Viewers whose failed attempt had committed (their later 2xx said auto_registered
    # false): outcome unknown to the client, made good by the idempotent retry.
    committed_unacknowledged: int = 0
    errors_over_1s: int = 0  # error answers slower than a second (in-flight at a freeze)
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        outcomes = " ".join(f"{k}:{v}" for k, v in sorted(self.outcomes.items()))
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f}s"
        extra = "".join(f" {k}={fmt(v)}" for k, v in self.extra.items())
        return (
            f"{self.name}: viewers={self.viewers} acknowledged={self.acknowledged} "
            f"stored={self.stored} lost={self.lost} dup={self.duplicates} "
            f"committed_unacknowledged={self.committed_unacknowledged} [{outcomes}] "
            f"max_error_latency={self.max_error_latency:.3f}s "
            f"(shim {self.max_error_server:.3f}s, {self.errors_over_1s} over 1 s) "
            f"p99_ok={self.p99_ok_latency:.3f}s fault={self.fault_seconds:.2f}s "
            f"recovery={recovery}{extra}"
        )


def fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def summarize(
    name: str,
    load: Load,
    user_ids: list[str],
    db: Database,
    *,
    fault_end: float,
    fault_seconds: float,
    **extra: Any,
) -> FaultResult:
    """Compare what the viewers were told with what the database holds."""
    stored = db.registrations(load.webinar)
    acked = {user_ids[i] for i in load.acknowledged}
    errors = [a.latency for a in load.attempts if not a.ok]
    oks = sorted(a.latency for a in load.attempts if a.ok)
    after = [a.sent + a.latency for a in load.attempts if a.ok and a.sent + a.latency >= fault_end]
    return FaultResult(
        name=name,
        viewers=len(user_ids),
        acknowledged=len(acked),
        stored=len(stored),
        lost=len(acked - set(stored)),
        duplicates=sum(1 for n in stored.values() if n > 1),
        outcomes=dict(Counter(a.outcome for a in load.attempts)),
        max_error_latency=max(errors, default=0.0),
        max_error_server=max((a.server for a in load.attempts if not a.ok), default=0.0),
        p99_ok_latency=oks[int(0.99 * (len(oks) - 1))] if oks else 0.0,
        fault_seconds=fault_seconds,
        recovery_seconds=(min(after) - fault_end) if after else None,
        errors_over_1s=sum(1 for x in errors if x > 1.0),
        committed_unacknowledged=sum(1 for a in load.attempts if a.auto_registered is False),
        bad_503s=sum(
            1 for a in load.attempts if a.kind == "http" and a.status == 503 and not a.retry_after
        ),
        extra=extra,
    )
