"""Reading what ``pura serve --record DIR`` wrote (see :mod:`pura.service.recording`).

The audit's attacks read server views only from here: the bytes a real server process sent
and received, the candidates A's pipeline read, and (as ground truth, never as an attacker's
input) A's preselection secrets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pura_client.audit.metrics import AuditError


@dataclass(frozen=True)
class Event:
    """One recorded event: its kind and its fields (byte fields still as blob references)."""

    seq: int
    kind: str
    fields: dict[str, Any]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


class Recording:
    """The events and payload bytes one role recorded (``DIR/a`` or ``DIR/b``)."""

    def __init__(self, root: Path) -> None:
        events = root / "events.jsonl"
        if not events.exists():
            raise AuditError(f"no recording at {root} (run the server with --record)")
        self.root = root
        self.events = [self._event(line) for line in events.read_text("utf-8").splitlines()
                       if line.strip()]
        self._blobs = (root / "blobs.bin").read_bytes() if (root / "blobs.bin").exists() else b""

    @staticmethod
    def _event(line: str) -> Event:
        raw = json.loads(line)
        return Event(int(raw.pop("seq")), str(raw.pop("kind")), raw)

    def blob(self, event: Event, name: str) -> bytes:
        """The bytes of ``event``'s field ``name`` (empty when the event has none)."""
        ref = event.get(name)
        if not isinstance(ref, dict) or "blob" not in ref:
            return b""
        offset, length = (int(v) for v in ref["blob"])
        return self._blobs[offset:offset + length]

    def of_kind(self, kind: str) -> Iterator[Event]:
        return (e for e in self.events if e.kind == kind)

    def exchanges(self, step: str | None = None) -> list[Event]:
        return [e for e in self.of_kind("exchange") if step is None or e.get("step") == step]

    def by_query(self, kind: str) -> dict[int, list[Event]]:
        """``kind`` events grouped by the identification they happened in (A only)."""
        out: dict[int, list[Event]] = {}
        for e in self.of_kind(kind):
            q = e.get("query")
            if q is not None:
                out.setdefault(int(q), []).append(e)
        return out

    def queries(self) -> list[int]:
        """Identification numbers A recorded, in order."""
        return [int(e.get("query")) for e in self.of_kind("query-begin")]


__all__ = ["Event", "Recording"]
