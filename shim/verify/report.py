"""The verify report: the checklist lines, the flow steps, the rollback triggers of the
post-deploy report's rollback section, and its three renderings (text table, JSON, markdown)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shim.console.verdicts import FAIL, OK, Verdict
from shim.verify import EXIT_CANNOT_CHECK, EXIT_FAILED, EXIT_OK
from shim.verify.flows import NA, Step

_ICON = {OK: "✅", FAIL: "❌", NA: "n/a"}


@dataclass
class Report:
    """Everything verify found; ``exit_code`` 0 all OK, 1 a check failed, 2 cannot check."""

    started_at: str
    seconds: float = 0.0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    database: dict[str, Any] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    webinar_id: int | None = None
    cleaned: bool = True
    cannot_check: str | None = None

    @property
    def triggers(self) -> list[dict[str, Any]]:
        """The rollback triggers: any one fired means roll back."""
        by = {v.check: v for v in self.verdicts}

        def failed(check: str) -> bool:
            return check in by and by[check].status == FAIL

        db = self.database
        load = (
            f"database: {db.get('active')} active / {db.get('connections')} connections of "
            f"{db.get('max_connections')}, {db.get('deadlocks')} deadlocks"
            if db
            else ""
        )
        return [
            {"trigger": "DoD-1 fails (400s from missing columns recur)", "fired": failed("DoD-1")},
            {"trigger": "DoD-2 fails (409 explosion)", "fired": failed("DoD-2"), "note": load},
            {
                "trigger": "functional regression: the service cannot run (DoD-4, nodes)",
                "fired": failed("DoD-4") or failed("NODES"),
            },
        ]

    @property
    def rollback(self) -> bool:
        return any(t["fired"] for t in self.triggers)

    @property
    def exit_code(self) -> int:
        if self.cannot_check:
            return EXIT_CANNOT_CHECK
        return EXIT_FAILED if any(v.status == FAIL for v in self.verdicts) else EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "seconds": round(self.seconds, 2),
            "exit_code": self.exit_code,
            "cannot_check": self.cannot_check,
            "nodes": self.nodes,
            "database": self.database,
            "checks": [v.as_dict() for v in self.verdicts],
            "flows": {
                "webinar_id": self.webinar_id,
                "removed": self.cleaned,
                "steps": [s.as_dict() for s in self.steps],
            },
            "rollback": {"needed": self.rollback, "triggers": self.triggers},
        }

    def json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    def text(self) -> str:
        out = [f"eventlive verify — {self.started_at} ({self.seconds:.1f} s)"]
        if self.cannot_check:
            out.append(f"CANNOT CHECK: {self.cannot_check}")
            return "\n".join(out) + "\n"
        for n in self.nodes:
            out.append(f"node {n['url']}: {n['ready']}, up since {n['started_at']}")
        out.append("")
        out.append(f"{'check':<7} {'status':<6} summary")
        for v in self.verdicts:
            out.append(f"{v.check:<7} {v.status:<6} {v.summary}")
            for row in v.rows:
                out.append("               " + _row_text(row))
        if self.steps:
            out.append("")
            out.append(
                f"flows (webinar {self.webinar_id}, {'removed' if self.cleaned else 'NOT removed'}):"
            )
            out.append(f"  {'flow':<15} {'step':<46} {'status':<6} {'http':>4} {'ms':>7}  note")
            for s in self.steps:
                ms = "" if s.ms is None else f"{s.ms:.1f}"
                out.append(
                    f"  {s.flow:<15} {s.step:<46} {s.status:<6} {s.http or '':>4} {ms:>7}  {s.note}"
                )
        out.append("")
        out.append("rollback triggers (any one fired: roll back):")
        for t in self.triggers:
            note = f"  ({t['note']})" if t.get("note") else ""
            out.append(f"  [{'x' if t['fired'] else ' '}] {t['trigger']}{note}")
        out.append(f"verdict: {'ROLL BACK' if self.rollback else 'no rollback needed'}")
        return "\n".join(out) + "\n"

    def markdown(self) -> str:
        out = [f"## Post-deploy verification — {self.started_at}", ""]
        if self.cannot_check:
            out += [f"**Cannot check**: {self.cannot_check}", ""]
            return "\n".join(out)
        out.append("Nodes: " + ", ".join(f"`{n['url']}` ({n['ready']})" for n in self.nodes))
        out += ["", "| check | verdict | evidence |", "|---|---|---|"]
        for v in self.verdicts:
            out.append(
                f"| {v.check}: {v.title} | {_ICON[v.status]} **{v.status}** | {_md(v.summary)} |"
            )
        if self.steps:
            out += [
                "",
                f"### DoD-4 flows (throwaway webinar {self.webinar_id}, "
                f"{'removed' if self.cleaned else 'NOT removed'})",
                "",
                "| flow | step | result | HTTP | ms | note |",
                "|---|---|---|---|---|---|",
            ]
            for s in self.steps:
                ms = "" if s.ms is None else f"{s.ms:.1f}"
                out.append(
                    f"| {s.flow} | {_md(s.step)} | {_ICON[s.status]}{'' if s.status == NA else ' ' + s.status} | {s.http or ''} | {ms} | {_md(s.note)} |"
                )
        out += ["", "### Rollback triggers", ""]
        for t in self.triggers:
            out.append(f"- [{'x' if t['fired'] else ' '}] {t['trigger']}")
        out += ["", f"**Verdict**: {'ROLL BACK' if self.rollback else 'no rollback needed'}", ""]
        return "\n".join(out)


def _row_text(row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in row.items() if v is not None and v != "")


def _md(text: str) -> str:
    return text.replace("|", "\\|")
