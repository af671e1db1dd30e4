"""Append-only, hash-chained audit log of enrolments, identifications and deletions.

Every entry carries ``prev`` (the previous entry's hash) and ``hash = SHA-256(canonical JSON of
the entry without its hash)``, so editing, deleting or reordering any entry breaks the chain at
that point and :func:`verify_chain` names the first broken index (threat T22; Crosby & Wallach,
USENIX Security 2009, for the idea). The log records who did what to which id with what outcome;
it never holds biometric payloads or ciphertexts.

Durability: each line is written with one ``write`` and ``fsync``\\ed before :meth:`AuditLog.append`
returns, so an acknowledged operation has its record on disk. A crash can leave at most one
partial final line (never acknowledged); opening the log drops such a tail, which is the only
non-append change ever made to the file. Anchoring the head hash outside the server (e.g. in a
signed checkpoint) is what makes truncation of *complete* entries detectable; the head is exposed
for that through :attr:`AuditLog.head`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pura.errors import ConfigError

GENESIS = "0" * 64


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class ChainVerification:
    """Result of walking the chain."""

    intact: bool
    entries: int
    first_bad_index: int | None
    head_hash: str


def verify_chain(lines: list[str]) -> ChainVerification:
    """Check every entry links to its predecessor and hashes to its stored hash."""
    prev = GENESIS
    for index, line in enumerate(lines):
        try:
            entry = json.loads(line)
            ok = (
                isinstance(entry, dict)
                and entry.get("index") == index
                and entry.get("prev") == prev
                and entry.get("hash") == _digest(entry)
            )
        except json.JSONDecodeError:
            ok = False
        if not ok:
            return ChainVerification(False, len(lines), index, prev)
        prev = entry["hash"]
    return ChainVerification(True, len(lines), None, prev)


class AuditLog:
    """A JSON-lines audit file; thread-safe appends."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_tail()
        lines = self._lines()
        result = verify_chain(lines)
        if not result.intact:
            raise ConfigError(
                f"audit log {self.path} is broken at entry {result.first_bad_index}; "
                "refusing to append to a tampered chain"
            )
        self._count = result.entries
        self._head = result.head_hash

    @property
    def head(self) -> str:
        """Hash of the newest entry (GENESIS when empty); anchor it externally."""
        return self._head

    def __len__(self) -> int:
        return self._count

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [ln for ln in self.path.read_text(encoding="ascii").split("\n") if ln]

    def _drop_partial_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())

    def append(
        self,
        *,
        principal: str,
        action: str,
        outcome: str,
        collection: str = "",
        target: str = "",
        detail: str = "",
        when: datetime | None = None,
    ) -> str:
        """Append one entry durably and return its hash."""
        with self._lock:
            entry: dict[str, Any] = {
                "index": self._count,
                "time": (when or datetime.now(UTC)).isoformat(timespec="milliseconds"),
                "principal": principal,
                "action": action,
                "collection": collection,
                "target": target,
                "outcome": outcome,
                "detail": detail,
                "prev": self._head,
            }
            entry["hash"] = _digest(entry)
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._count += 1
            self._head = str(entry["hash"])
            return self._head

    def verify(self) -> ChainVerification:
        """Re-read the file and verify the whole chain (detects edits made behind our back)."""
        with self._lock:
            return verify_chain(self._lines())

    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(ln) for ln in self._lines()]


__all__ = ["GENESIS", "AuditLog", "ChainVerification", "verify_chain"]
