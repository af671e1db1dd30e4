"""Server B's durable store of candidate copies (issue 11).

B serves the exact stage's candidates from its own copies of the admitted templates, so the
copies get A's crash guarantees: SQLite in WAL mode with ``synchronous=FULL`` (a copy is durable
once B acknowledges it), ``secure_delete`` (an erased copy leaves no bytes in freed pages) and a
``TRUNCATE`` checkpoint after erasures, files 0600 in a 0700 directory. Copies are filed under
A's store instance and collection (the *namespace*), at the block/slot they occupy.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pura.errors import StoreError

Position = tuple[int, int]
"""``(block, slot)`` of a template in the packed CKKS blocks."""


@dataclass(frozen=True)
class Copy:
    """B's copy of one admitted template: where it sits, a tag A uses to reconcile, and the
    template and label ciphertexts (bytes; B never decrypts them)."""

    block: int
    slot: int
    tag: str
    template: bytes
    label: bytes

    @property
    def position(self) -> Position:
        return (self.block, self.slot)

    def __repr__(self) -> str:
        return f"Copy(block={self.block}, slot={self.slot})"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS copies (
    namespace TEXT NOT NULL,
    block INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    tag TEXT NOT NULL,
    template BLOB NOT NULL,
    label BLOB NOT NULL,
    PRIMARY KEY (namespace, block, slot)
);
"""


class CopyStore:
    """``(namespace, block, slot) -> Copy``, durable; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None,
                                       check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            for pragma in ("synchronous=FULL", "secure_delete=ON"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open copy store {self.path}: {exc}") from exc
        self._cache: dict[str, dict[Position, Copy]] = {}

    def __repr__(self) -> str:
        return f"CopyStore({self.path.name})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def copies(self, namespace: str) -> dict[Position, Copy]:
        """Every copy of ``namespace`` (cached in memory after the first read)."""
        with self._lock:
            cached = self._cache.get(namespace)
            if cached is None:
                rows = self._db.execute(
                    "SELECT block, slot, tag, template, label FROM copies WHERE namespace = ?",
                    (namespace,)).fetchall()
                cached = {(int(b), int(s)): Copy(int(b), int(s), str(t), bytes(tp), bytes(lb))
                          for b, s, t, tp, lb in rows}
                self._cache[namespace] = cached
            return cached

    def put(self, namespace: str, copies: Sequence[Copy]) -> int:
        """Store (or replace) copies in one transaction; durable when this returns."""
        current = self.copies(namespace)
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO copies VALUES (?, ?, ?, ?, ?, ?)",
                [(namespace, c.block, c.slot, c.tag, c.template, c.label) for c in copies])
        with self._lock:
            for c in copies:
                current[c.position] = c
        return len(copies)

    def erase(self, namespace: str, positions: Sequence[Position]) -> int:
        """Erase copies (secure delete + WAL truncation); returns how many existed."""
        current = self.copies(namespace)
        with self._tx() as db:
            db.executemany("DELETE FROM copies WHERE namespace = ? AND block = ? AND slot = ?",
                           [(namespace, b, s) for b, s in positions])
        with self._lock:
            gone = sum(1 for p in positions if current.pop(p, None) is not None)
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return gone

    def sync(
        self, namespace: str, entries: Sequence[tuple[Position, str]]
    ) -> tuple[list[Position], int]:
        """Make B's copies agree with A's list: drop what A does not hold (or holds under
        another tag), return the positions B lacks and how many it dropped."""
        current = self.copies(namespace)
        want = dict(entries)
        stale = [p for p, c in current.items() if want.get(p) != c.tag]
        dropped = self.erase(namespace, stale) if stale else 0
        missing = [p for p in want if p not in current]
        return missing, dropped


__all__ = ["Copy", "CopyStore", "Position"]
