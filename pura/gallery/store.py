"""Durable encrypted gallery: SQLite in WAL mode.

Why these settings:

* ``journal_mode=WAL`` + ``synchronous=FULL``: a commit returns only after the WAL is fsynced, so
  an acknowledged enrolment survives SIGKILL and power loss (WAL + NORMAL "may roll back following
  a power loss"). One transaction per logical operation (one template, one bulk batch, one
  deletion, one block replacement) means a crash leaves either all of it or none of it.
* ``secure_delete=ON``: SQLite overwrites freed content with zeros, and :meth:`GalleryStore.
  delete_subject` ends with ``wal_checkpoint(TRUNCATE)``, so a deleted template's ciphertext bytes
  remain neither in the database file nor in the WAL (threat T23, "delete every copy").
* ``foreign_keys=ON``: templates cannot outlive their collection.
* Private files: the data directory is made 0700 and the database is created 0600 *before*
  SQLite opens it, because SQLite creates ``-wal`` and ``-shm`` with the database file's mode;
  created 0644 they would let other local users read subject ids (issue 13, item 10).
* A request id names one request: a resend for the same subject is the same enrolment
  (``already_enrolled``); a reuse for another subject is refused with
  :class:`~pura.errors.AlreadyExistsError`, never answered "OK" (issue 13, item 5). The template
  itself cannot be compared: encryption is randomised and a client retrying after a failure
  re-encrypts the same face, so a retry and a different face of the same subject look alike.

Only ciphertexts and ids are stored; the store never sees a plaintext template. Template ids are
128-bit random hex (unguessable, threat T18); the generator is injectable for tests.

A template's CKKS *head* is kept only while it is pending (not yet written into its packed
block by the block refresh); :meth:`GalleryStore.put_block` drops it in the same transaction that
stores the refreshed block, so there is exactly one copy of every head.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pura.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, StoreError

_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SUBJECT_MAX = 256
#: Punctuation allowed in subject ids besides letters and digits (e-mail-like and file-like ids).
_SUBJECT_PUNCTUATION = frozenset("._-@")
#: SQLite integers are signed 64-bit.
_MAX_SQL_INT = (1 << 63) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    parameter_set_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    block_size INTEGER NOT NULL CHECK (block_size > 0),
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    template_id TEXT PRIMARY KEY,
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    subject_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    parameter_set_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    block_no INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    paillier BLOB NOT NULL,
    head BLOB,
    placed INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    UNIQUE (collection, request_id),
    UNIQUE (collection, block_no, slot)
);
CREATE INDEX IF NOT EXISTS templates_subject ON templates (collection, subject_id);
CREATE INDEX IF NOT EXISTS templates_pending ON templates (collection, placed);
CREATE TABLE IF NOT EXISTS budget_events (
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS budget_events_at ON budget_events (at);
CREATE TABLE IF NOT EXISTS blocks (
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    block_no INTEGER NOT NULL,
    data BLOB NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (collection, block_no)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _check_collection_name(name: str) -> None:
    if not _COLLECTION_RE.match(name):
        raise InvalidArgumentError(
            f"collection name must match {_COLLECTION_RE.pattern}, got {len(name)} characters"
        )


def _subject_char_ok(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category.startswith("L") or category == "Nd" or ch in _SUBJECT_PUNCTUATION


def check_subject_id(subject_id: str) -> None:
    """Subject ids are 1..256 characters of NFC letters (any script), decimal digits and
    ``. _ - @``.

    Why so strict: ids are echoed into the audit log, admin listings and operators' terminals.
    Control characters (C0, DEL, U+0085), bidirectional overrides (U+202E), zero-width
    characters (U+200B) and line/paragraph separators (U+2028) let an enroller forge log lines
    or make two different ids look identical; a non-NFC id could do the latter too. Spaces are
    not allowed either: LFW-style ids use ``_``.
    """
    if (
        not 0 < len(subject_id) <= _SUBJECT_MAX
        or unicodedata.normalize("NFC", subject_id) != subject_id
        or not all(_subject_char_ok(ch) for ch in subject_id)
    ):
        raise InvalidArgumentError(
            f"subject id must be 1..{_SUBJECT_MAX} NFC letters, digits or '._-@' "
            f"(got {len(subject_id)} characters)"
        )


def _private_file(path: Path) -> None:
    """Create ``path`` 0600 if missing, tighten it if it exists (see the module docstring)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def _same_request(item: NewTemplate, subject: str) -> None:
    """Raise unless ``item`` can be a resend of a request made for ``subject``."""
    if subject != item.subject_id:
        raise AlreadyExistsError("request id already names an enrolment of another subject; "
                                 "use a fresh request id per template")


@dataclass(frozen=True)
class Collection:
    """A gallery bound to one parameter set, key and model."""

    name: str
    parameter_set_id: str
    key_id: str
    model_id: str
    threshold: int
    block_size: int
    created_at: str


@dataclass(frozen=True)
class NewTemplate:
    """What the service hands the store for one enrolment (ciphertext bytes only)."""

    subject_id: str
    request_id: str
    model_id: str
    parameter_set_id: str
    key_id: str
    paillier: bytes
    head: bytes

    def __repr__(self) -> str:  # ciphertexts are not secrets, but they are large and private data
        return f"NewTemplate(subject_id={self.subject_id!r}, request_id={self.request_id!r})"


@dataclass(frozen=True)
class EnrollResult:
    """Outcome of storing one :class:`NewTemplate`."""

    request_id: str
    template_id: str
    already_enrolled: bool
    block_no: int
    slot: int


@dataclass(frozen=True)
class TemplateRecord:
    """A stored template. ``head`` is ``None`` once the head lives in its block."""

    template_id: str
    subject_id: str
    block_no: int
    slot: int
    paillier: bytes
    head: bytes | None

    def __repr__(self) -> str:
        return (
            f"TemplateRecord(template_id={self.template_id!r}, subject_id={self.subject_id!r}, "
            f"block_no={self.block_no}, slot={self.slot})"
        )


@dataclass(frozen=True)
class Block:
    """A packed CKKS block as stored (serialised by pura.gallery.packing)."""

    block_no: int
    data: bytes
    version: int

    def __repr__(self) -> str:
        return f"Block(block_no={self.block_no}, version={self.version}, bytes={len(self.data)})"


@dataclass(frozen=True)
class DeletedSubject:
    """Which slots a deletion freed, so the caller can refresh those blocks."""

    subject_id: str
    template_ids: tuple[str, ...]
    slots: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class CollectionStats:
    """Sizes of one collection."""

    subjects: int
    templates: int
    blocks: int
    pending_templates: int
    template_bytes: int
    block_bytes: int


class GalleryStore:
    """Thread-safe SQLite gallery (one connection guarded by a lock: SQLite serialises writers
    anyway, and one connection keeps the WAL checkpoint logic simple)."""

    def __init__(self, path: Path, *, token: Callable[[], str] | None = None) -> None:
        self.path = Path(path)
        self._token = token or (lambda: secrets.token_hex(16))
        self._lock = threading.RLock()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        _private_file(self.path)
        for suffix in ("-wal", "-shm"):  # left by an earlier run with a looser mode
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                os.chmod(extra, 0o600)
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._configure()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open gallery store {self.path}: {exc}") from exc

    def _configure(self) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"SQLite refused WAL mode (got {mode})")
        for pragma in ("synchronous=FULL", "secure_delete=ON", "foreign_keys=ON"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.executescript(_SCHEMA)
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('instance', ?)",
                         (secrets.token_hex(16),))

    @property
    def instance_id(self) -> str:
        """A random id made when this store was created: B files its candidate copies under it,
        so two A stores that share one B (tests, a migration) never share copies."""
        return str(self._query("SELECT value FROM meta WHERE key = 'instance'")[0][0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all or nothing, durable once it returns."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot start transaction: {exc}") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"commit failed: {exc}") from exc

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            try:
                return list(self._db.execute(sql, tuple(args)).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"query failed: {exc}") from exc

    # --- collections -------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        parameter_set_id: str,
        key_id: str,
        model_id: str,
        threshold: int,
        block_size: int,
    ) -> Collection:
        _check_collection_name(name)
        if not 0 <= threshold <= _MAX_SQL_INT or not 0 < block_size <= _MAX_SQL_INT:
            raise InvalidArgumentError("threshold must be in [0, 2^63) and block_size > 0")
        coll = Collection(name, parameter_set_id, key_id, model_id, threshold, block_size, _now())
        with self._tx() as db:
            if db.execute("SELECT 1 FROM collections WHERE name=?", (name,)).fetchone():
                raise AlreadyExistsError(f"collection {name!r} already exists")
            db.execute(
                "INSERT INTO collections VALUES (?,?,?,?,?,?,?)",
                (name, parameter_set_id, key_id, model_id, threshold, block_size, coll.created_at),
            )
        return coll

    def get_collection(self, name: str) -> Collection:
        rows = self._query("SELECT * FROM collections WHERE name=?", (name,))
        if not rows:
            raise NotFoundError(f"unknown collection {name!r}")
        r = rows[0]
        return Collection(
            str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), str(r[6])
        )

    def list_collections(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT name FROM collections ORDER BY name")]

    # --- enrolment ---------------------------------------------------------------------------

    def add_templates(self, collection: str, items: Sequence[NewTemplate]) -> list[EnrollResult]:
        """Store a batch in ONE transaction; items whose request_id is already stored for the
        same subject are reported as ``already_enrolled`` (resumable bulk upload) and not
        stored twice. A request id reused for another subject raises
        :class:`AlreadyExistsError` (use :meth:`check_request_ids` first to reject such items
        one by one instead of failing the batch)."""
        coll = self.get_collection(collection)
        results: list[EnrollResult] = []
        with self._tx() as db:
            free = self._free_slots(db, collection, coll.block_size)
            for item in items:
                check_subject_id(item.subject_id)
                row = db.execute(
                    "SELECT template_id, block_no, slot, subject_id "
                    "FROM templates WHERE collection=? AND request_id=?",
                    (collection, item.request_id),
                ).fetchone()
                if row:
                    _same_request(item, str(row[3]))
                    results.append(
                        EnrollResult(item.request_id, str(row[0]), True, int(row[1]), int(row[2]))
                    )
                    continue
                block_no, slot = next(free)
                template_id = self._token()
                db.execute(
                    "INSERT INTO templates (template_id, collection, subject_id, request_id, "
                    "model_id, parameter_set_id, key_id, block_no, slot, paillier, head, placed, "
                    "created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,0,?)",
                    (
                        template_id, collection, item.subject_id, item.request_id, item.model_id,
                        item.parameter_set_id, item.key_id, block_no, slot, item.paillier,
                        item.head, _now(),
                    ),
                )
                results.append(EnrollResult(item.request_id, template_id, False, block_no, slot))
        return results

    def check_request_ids(self, collection: str, items: Sequence[NewTemplate]) -> list[
        AlreadyExistsError | None
    ]:
        """Per item: the error :meth:`add_templates` would raise for a reused request id (an id
        already stored, or earlier in ``items``, for another subject), or None. Lets
        BulkEnroll reject such items one by one."""
        out: list[AlreadyExistsError | None] = []
        seen: dict[str, str] = {}
        for item in items:
            rows = self._query("SELECT subject_id FROM templates WHERE collection=? AND "
                               "request_id=?", (collection, item.request_id))
            try:
                _same_request(item, seen.get(item.request_id, item.subject_id))
                if rows:
                    _same_request(item, str(rows[0][0]))
                out.append(None)
            except AlreadyExistsError as exc:
                out.append(exc)
            seen.setdefault(item.request_id, item.subject_id)
        return out

    @staticmethod
    def _free_slots(
        db: sqlite3.Connection, collection: str, block_size: int
    ) -> Iterator[tuple[int, int]]:
        """Free (block, slot) positions, lowest first: slots freed by deletions are reused
        (the deletion's block refresh zeroed them before its receipt was issued), then the
        positions after the last one. One scan per batch, not per template."""
        rows = db.execute(
            "SELECT block_no * ? + slot FROM templates WHERE collection=? ORDER BY 1",
            (block_size, collection),
        ).fetchall()
        taken = [int(r[0]) for r in rows]
        position, i = 0, 0
        while True:
            if i < len(taken) and taken[i] == position:
                i += 1
            else:
                yield position // block_size, position % block_size
            position += 1

    # --- reads -------------------------------------------------------------------------------

    def _records(self, where: str, args: Sequence[object]) -> list[TemplateRecord]:
        rows = self._query(
            "SELECT template_id, subject_id, block_no, slot, paillier, head FROM templates "
            f"WHERE {where} ORDER BY block_no, slot",
            args,
        )
        return [
            TemplateRecord(str(r[0]), str(r[1]), int(r[2]), int(r[3]), bytes(r[4]),
                           None if r[5] is None else bytes(r[5]))
            for r in rows
        ]

    def all_templates(self, collection: str) -> list[TemplateRecord]:
        return self._records("collection=?", (collection,))

    def templates_of_subject(self, collection: str, subject_id: str) -> list[TemplateRecord]:
        self.get_collection(collection)
        return self._records("collection=? AND subject_id=?", (collection, subject_id))

    def templates_at(
        self, collection: str, slots: Sequence[tuple[int, int]]
    ) -> list[TemplateRecord]:
        """Templates at the given (block, slot) positions, in the order asked; missing -> error."""
        by_pos = {(t.block_no, t.slot): t for t in self._records("collection=?", (collection,))}
        try:
            return [by_pos[(int(b), int(s))] for b, s in slots]
        except KeyError as exc:
            raise NotFoundError(f"no template at position {exc.args[0]}") from None

    def templates_by_id(self, collection: str, template_ids: Sequence[str]) -> list[TemplateRecord]:
        """Templates with the given ids, in the order asked (ids no longer stored are skipped:
        a deletion may race with a query that preselected the template)."""
        if not template_ids:
            return []
        marks = ",".join("?" * len(template_ids))
        found = {
            t.template_id: t
            for t in self._records(f"collection=? AND template_id IN ({marks})",
                                   (collection, *template_ids))
        }
        return [found[t] for t in template_ids if t in found]

    def pending_templates(self, collection: str) -> list[TemplateRecord]:
        return self._records("collection=? AND placed=0", (collection,))

    def occupied_slots(self, collection: str) -> dict[tuple[int, int], str]:
        """(block, slot) -> subject id of every *placed* template (A's private slot table)."""
        rows = self._query(
            "SELECT block_no, slot, subject_id FROM templates WHERE collection=? AND placed=1",
            (collection,),
        )
        return {(int(r[0]), int(r[1])): str(r[2]) for r in rows}

    def request_ids(self, collection: str) -> set[str]:
        """Idempotency keys of every stored template (crash tests, resumable uploads)."""
        rows = self._query("SELECT request_id FROM templates WHERE collection=?", (collection,))
        return {str(r[0]) for r in rows}

    def slot_table(self, collection: str) -> dict[tuple[int, int], tuple[str, bool]]:
        """(block, slot) -> (template id, placed) of every template row: what the packed blocks
        must agree with after a restart."""
        rows = self._query(
            "SELECT block_no, slot, template_id, placed FROM templates WHERE collection=?",
            (collection,),
        )
        return {(int(r[0]), int(r[1])): (str(r[2]), bool(r[3])) for r in rows}

    def subject_count(self, collection: str) -> int:
        rows = self._query(
            "SELECT COUNT(DISTINCT subject_id) FROM templates WHERE collection=?", (collection,)
        )
        return int(rows[0][0])

    def list_subjects(self, collection: str, *, limit: int, after: str = "") -> list[str]:
        self.get_collection(collection)
        rows = self._query(
            "SELECT DISTINCT subject_id FROM templates WHERE collection=? AND subject_id>? "
            "ORDER BY subject_id LIMIT ?",
            (collection, after, limit),
        )
        return [str(r[0]) for r in rows]

    # --- blocks ------------------------------------------------------------------------------

    def blocks(self, collection: str) -> list[Block]:
        rows = self._query(
            "SELECT block_no, data, version FROM blocks WHERE collection=? ORDER BY block_no",
            (collection,),
        )
        return [Block(int(r[0]), bytes(r[1]), int(r[2])) for r in rows]

    def get_block(self, collection: str, block_no: int) -> Block | None:
        rows = self._query(
            "SELECT block_no, data, version FROM blocks WHERE collection=? AND block_no=?",
            (collection, block_no),
        )
        if not rows:
            return None
        r = rows[0]
        return Block(int(r[0]), bytes(r[1]), int(r[2]))

    def put_block(
        self, collection: str, block_no: int, data: bytes, placed: Sequence[str], *, version: int,
        moves: Mapping[int, int] | None = None,
    ) -> None:
        """Replace a block and mark ``placed`` templates as written into it, atomically.

        ``version`` must be the stored version + 1 (optimistic check): a refresh computed from a
        stale block never overwrites a newer one. Heads of placed templates are dropped here, in
        the same transaction, so the head exists in exactly one place at any instant.
        ``moves`` (old slot → new slot, a re-layout): every template row of the block moves in
        the same transaction, so the rows and the block's slot table never disagree; a row
        the moves do not cover is an error (the block would lose track of it).
        """
        with self._tx() as db:
            if moves is not None:
                self._move_slots(db, collection, block_no, moves)
            row = db.execute(
                "SELECT version FROM blocks WHERE collection=? AND block_no=?",
                (collection, block_no),
            ).fetchone()
            current = int(row[0]) if row else 0
            if version != current + 1:
                raise StoreError(f"block {block_no} is at version {current}, refusing {version}")
            db.execute(
                "INSERT OR REPLACE INTO blocks VALUES (?,?,?,?,?)",
                (collection, block_no, data, version, _now()),
            )
            for template_id in placed:
                cur = db.execute(
                    "UPDATE templates SET placed=1, head=NULL "
                    "WHERE template_id=? AND collection=? AND block_no=?",
                    (template_id, collection, block_no),
                )
                if cur.rowcount != 1:
                    raise StoreError(f"template {template_id} is not in block {block_no}")

    @staticmethod
    def _move_slots(
        db: sqlite3.Connection, collection: str, block_no: int, moves: Mapping[int, int]
    ) -> None:
        rows = db.execute("SELECT slot FROM templates WHERE collection=? AND block_no=?",
                          (collection, block_no)).fetchall()
        slots = {int(r[0]) for r in rows}
        if not slots <= moves.keys() or len(set(moves.values())) != len(moves):
            raise StoreError(f"re-layout of block {block_no} does not move every template "
                             "to a distinct slot")
        # Two passes through negative slots: UNIQUE (collection, block_no, slot) holds after
        # each statement, whatever the permutation's cycles.
        db.executemany("UPDATE templates SET slot=? WHERE collection=? AND block_no=? AND slot=?",
                       [(-1 - moves[s_], collection, block_no, s_) for s_ in slots])
        db.execute("UPDATE templates SET slot=-1-slot WHERE collection=? AND block_no=? "
                   "AND slot<0", (collection, block_no))

    def drop_block(self, collection: str, block_no: int) -> None:
        """Remove a block that no longer holds any template."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM blocks WHERE collection=? AND block_no=?", (collection, block_no)
            )

    # --- deletion ----------------------------------------------------------------------------

    def delete_subject(self, collection: str, subject_id: str) -> DeletedSubject:
        """Remove every template row of a subject in one transaction.

        The caller then refreshes the freed slots' blocks (see pura.protocols.refresh) and calls
        :meth:`checkpoint`, so no copy remains in blocks, rows, or the WAL.
        """
        self.get_collection(collection)
        with self._tx() as db:
            rows = db.execute(
                "SELECT template_id, block_no, slot, placed FROM templates "
                "WHERE collection=? AND subject_id=? ORDER BY block_no, slot",
                (collection, subject_id),
            ).fetchall()
            if not rows:
                raise NotFoundError(f"unknown subject in collection {collection!r}")
            db.execute(
                "DELETE FROM templates WHERE collection=? AND subject_id=?",
                (collection, subject_id),
            )
        return DeletedSubject(
            subject_id,
            tuple(str(r[0]) for r in rows),
            tuple((int(r[1]), int(r[2])) for r in rows if int(r[3]) == 1),
        )

    def drop_pending_template(self, collection: str, template_id: str) -> TemplateRecord | None:
        """Delete a template that was never placed (its head could not be written into its
        block); returns what was deleted, or None if it is gone or already placed."""
        with self._tx() as db:
            row = db.execute(
                "SELECT template_id, subject_id, block_no, slot, paillier, head FROM templates "
                "WHERE collection=? AND template_id=? AND placed=0", (collection, template_id),
            ).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM templates WHERE collection=? AND template_id=?",
                       (collection, template_id))
        return TemplateRecord(str(row[0]), str(row[1]), int(row[2]), int(row[3]),
                              bytes(row[4]), None if row[5] is None else bytes(row[5]))

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it to zero bytes."""
        with self._lock:
            try:
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"checkpoint failed: {exc}") from exc
        if busy:
            raise StoreError("WAL checkpoint was blocked by a reader; deletion not yet final")

    # --- query budgets -----------------------------------------------------------------------

    def add_budget_event(self, subject: str, kind: str, at: float) -> None:
        """Record one charge against a budget (``subject``: a principal or a verification
        target; ``kind``: which budget). Durable before it returns, like every write here:
        a restart must not hand an attacker a fresh budget (issue 13, item 9)."""
        with self._tx() as db:
            db.execute("INSERT INTO budget_events VALUES (?,?,?)", (subject, kind, at))

    def remove_budget_event(self, subject: str, kind: str, at: float) -> None:
        """Undo one charge (a query that was charged and then not answered)."""
        with self._tx() as db:
            db.execute("DELETE FROM budget_events WHERE rowid = (SELECT rowid FROM "
                       "budget_events WHERE subject=? AND kind=? AND at=? LIMIT 1)",
                       (subject, kind, at))

    def budget_events(self, since: float) -> list[tuple[str, str, float]]:
        """Every charge at or after ``since``, oldest first; older ones are deleted."""
        with self._tx() as db:
            db.execute("DELETE FROM budget_events WHERE at < ?", (since,))
        rows = self._query("SELECT subject, kind, at FROM budget_events ORDER BY at")
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    # --- health ------------------------------------------------------------------------------

    def integrity_check(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])

    def stats(self, collection: str) -> CollectionStats:
        self.get_collection(collection)
        t = self._query(
            "SELECT COUNT(*), COUNT(DISTINCT subject_id), COALESCE(SUM(placed=0),0), "
            "COALESCE(SUM(LENGTH(paillier) + COALESCE(LENGTH(head),0)),0) "
            "FROM templates WHERE collection=?",
            (collection,),
        )[0]
        b = self._query(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)),0) FROM blocks WHERE collection=?",
            (collection,),
        )[0]
        return CollectionStats(
            subjects=int(t[1]), templates=int(t[0]), blocks=int(b[0]),
            pending_templates=int(t[2]), template_bytes=int(t[3]), block_bytes=int(b[1]),
        )


__all__ = [
    "Block",
    "Collection",
    "CollectionStats",
    "DeletedSubject",
    "EnrollResult",
    "GalleryStore",
    "NewTemplate",
    "TemplateRecord",
    "check_subject_id",
]
