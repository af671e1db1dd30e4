"""``pura serve --record DIR``: what a running server sent, received, read and stored.

This is an **auditor's tool for evaluation galleries**, never for production data: the records
hold every A↔B payload and, at A, the per-query preselection secrets (rotations, block order,
masks) that exist only so that the audit can compare an attack's guess with the truth. A
recording server writes them in the clear to ``DIR``; without ``--record`` nothing here runs
and nothing is written.

Why recording lives in the server process and not in a re-implementation: the privacy audit
(``pura-audit views``) must measure what the shipped ``pura serve`` does. So the hooks wrap the
real objects of a running node — A's :class:`~pura.pipeline.HelperChannel` (its ``recorder``),
the :class:`~pura.pipeline.TemplateSource` A's pipeline reads candidates from, A's preselection
server, and B's helper-step handlers — and change nothing they compute.

Layout of ``DIR/<role>/`` (``a`` or ``b``):

* ``events.jsonl``: one JSON object per event, in order. Byte fields are stored in
  ``blobs.bin`` and referenced as ``{"blob": [offset, length]}``.
* ``blobs.bin``: the payload bytes, appended.
* ``data/`` (A, when it stops): a consistent copy of A's store (``gallery.db``, through SQLite's
  backup API) and its audit log — "what A stored".

Event kinds: ``exchange`` (one helper step: ``step``, ``request``, ``reply``, ``seconds``,
``query``), ``query-begin``/``query-end`` (A: one identification, numbered from 0), ``fetch``
(A: the template ids and labels its pipeline read, in order), ``opened`` (A: the subject a
jointly opened label named, on a match), ``preselect-state`` (A: the
secret state of one preselection, ground truth only), ``relayout`` (A: the secret slot
permutation of one block's re-layout, ground truth only).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pura.pipeline.channel import Exchange, Recorder

StepHandler = Callable[[bytes], bytes]

EVENTS = "events.jsonl"
BLOBS = "blobs.bin"


def _plain(value: Any) -> Any:
    """A JSON-able copy of a (possibly nested) dataclass/dict/tuple value; bytes as hex.

    Generic on purpose: the preselection state's fields change as the protocol evolves, and
    the recording must keep working without knowing them."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"hex": bytes(value).hex()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class EventLog:
    """Append-only events + blobs of one role, thread-safe (A's admission runs on a thread)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._lock = threading.Lock()
        self._events = open(root / EVENTS, "a", encoding="utf-8")  # noqa: SIM115 - long-lived
        self._blobs = open(root / BLOBS, "ab")  # noqa: SIM115 - long-lived
        self._offset = self._blobs.tell()
        self._seq = 0

    def write(self, kind: str, fields: Mapping[str, Any], blobs: Mapping[str, bytes] = {}) -> None:
        with self._lock:
            event: dict[str, Any] = {"seq": self._seq, "kind": kind, "time": time.time()}
            self._seq += 1
            for name, data in blobs.items():
                self._blobs.write(data)
                event[name] = {"blob": [self._offset, len(data)]}
                self._offset += len(data)
            event.update({k: _plain(v) for k, v in fields.items()})
            self._blobs.flush()
            self._events.write(json.dumps(event, sort_keys=True) + "\n")
            self._events.flush()

    def close(self) -> None:
        with self._lock:
            self._events.close()
            self._blobs.close()


class FileRecorder(Recorder):
    """The :class:`~pura.pipeline.Recorder` of a recording server: exchanges to an EventLog,
    tagged with the identification in flight (A serialises nothing for this: the tag is the
    last ``query-begin`` without its ``query-end``, exact when queries arrive one at a time,
    as the audit sends them)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.query: int | None = None
        self._queries = 0
        self._lock = threading.Lock()

    def record(self, exchange: Exchange) -> None:
        self.log.write("exchange", {"step": exchange.step, "seconds": exchange.seconds,
                                    "query": self.query},
                       {"request": exchange.request, "reply": exchange.reply})

    def begin_query(self) -> int:
        with self._lock:
            number = self._queries
            self._queries += 1
            self.query = number
        self.log.write("query-begin", {"query": number})
        return number

    def end_query(self, number: int, outcome: str) -> None:
        self.log.write("query-end", {"query": number, "outcome": outcome})
        with self._lock:
            if self.query == number:
                self.query = None


class _RecordingSource:
    """Wraps the TemplateSource A's pipeline reads: records which templates it fetched and
    which subject an opened label named; every other attribute is the wrapped source's."""

    def __init__(self, inner: Any, recorder: FileRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def candidates(self, template_ids: Sequence[int]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = self._inner.candidates(template_ids)
        self._recorder.log.write("fetch", {
            "query": self._recorder.query,
            "template_ids": [format(t, "032x") for t in template_ids],
            "labels": [label for label, _ in out],
        })
        return out

    def subject_of(self, template_id: int) -> str:
        subject: str = self._inner.subject_of(template_id)
        self._recorder.log.write("opened", {"query": self._recorder.query,
                                            "template_id": format(template_id, "032x"),
                                            "label": subject})
        return subject


def _record_preselect(server: Any, recorder: FileRecorder) -> None:
    """Record the secret state of every preselection ``server`` draws (auditor ground truth)."""
    if getattr(server, "_pura_recording", False) or not hasattr(server, "request"):
        return
    inner = server.request

    def request(*args: Any, **kwargs: Any) -> Any:
        made = inner(*args, **kwargs)
        state = made[1] if isinstance(made, tuple) and len(made) > 1 else None
        recorder.log.write("preselect-state", {"query": recorder.query, "state": state})
        return made

    server.request = request
    server._pura_recording = True


@dataclasses.dataclass
class ARecording:
    """Recording hooks installed on one running server A (see :func:`instrument_a`)."""

    root: Path
    log: EventLog
    recorder: FileRecorder
    data_dir: Path

    def snapshot(self) -> None:
        """Copy what A stored: the gallery through SQLite's backup API (consistent even with
        a WAL), and the audit log."""
        out = self.root / "data"
        out.mkdir(parents=True, exist_ok=True)
        db = self.data_dir / "gallery.db"
        if db.exists():
            src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            dst = sqlite3.connect(out / "gallery.db")
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        log = self.data_dir / "audit.jsonl"
        if log.exists():
            shutil.copyfile(log, out / "audit.jsonl")

    def close(self) -> None:
        self.snapshot()
        self.log.close()


def instrument_a(node: Any, record_dir: Path, data_dir: Path) -> ARecording:
    """Install the recording hooks on a :class:`~pura.service.nodes.NodeA`.

    What is wrapped, and why each is enough: every A→B call goes through ``node.helper`` (its
    ``recorder``); the pipeline reads candidates only through ``node.candidates(collection)``;
    preselection state is drawn by each collection's ``PreselectServer.request``, reached
    through ``node._gallery`` (the gallery index is built lazily, so the hook wraps the
    factory). The wrappers pass every value through unchanged.
    """
    root = record_dir / "a"
    log = EventLog(root)
    recorder = FileRecorder(log)
    node.helper.recorder = recorder
    identify, candidates, gallery = node.identify, node.candidates, node._gallery

    def recorded_identify(*args: Any, **kwargs: Any) -> Any:
        number = recorder.begin_query()
        outcome = "error"
        try:
            result = identify(*args, **kwargs)
            outcome = "no-match" if result is None else "match"
            return result
        finally:
            recorder.end_query(number, outcome)

    def recorded_candidates(collection: str) -> _RecordingSource:
        return _RecordingSource(candidates(collection), recorder)

    def recorded_gallery(name: str) -> Any:
        index = gallery(name)
        _record_preselect(getattr(index, "preselect", None), recorder)
        return index

    relayout = node.enroller.relayout

    def recorded_relayout(block: Any, *args: Any, **kwargs: Any) -> Any:
        block_id = block.block_id
        source = relayout(block, *args, **kwargs)
        log.write("relayout", {"query": recorder.query, "block": block_id,
                               "source": [int(x) for x in source]})
        return source

    node.identify = recorded_identify
    node.candidates = recorded_candidates
    node._gallery = recorded_gallery
    node.enroller.relayout = recorded_relayout
    log.write("start", {"role": "a", "key_id": node.keys.public.key_id})
    return ARecording(root, log, recorder, data_dir)


def record_b(handlers: Mapping[str, StepHandler], record_dir: Path) -> tuple[
    dict[str, StepHandler], EventLog
]:
    """B's helper-step handlers, each recording the request it handled and its reply (or the
    error it raised)."""
    log = EventLog(record_dir / "b")
    log.write("start", {"role": "b"})

    def wrap(step: str, handler: StepHandler) -> StepHandler:
        def run(payload: bytes) -> bytes:
            started = time.perf_counter()
            try:
                reply = handler(payload)
            except Exception as exc:
                log.write("exchange", {"step": step, "error": type(exc).__name__,
                                       "seconds": time.perf_counter() - started},
                          {"request": payload})
                raise
            log.write("exchange", {"step": step, "seconds": time.perf_counter() - started},
                      {"request": payload, "reply": reply})
            return reply

        return run

    return {step: wrap(step, h) for step, h in handlers.items()}, log


__all__ = ["ARecording", "EventLog", "FileRecorder", "instrument_a", "record_b"]
