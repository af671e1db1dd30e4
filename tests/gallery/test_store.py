"""GalleryStore: settings, transactions, slot allocation, idempotency, deletion hygiene."""

from __future__ import annotations

import itertools
import os
import secrets
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pura.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, StoreError
from pura.gallery.store import GalleryStore, NewTemplate


def _store(tmp: Path, block_size: int = 4) -> GalleryStore:
    counter = itertools.count()
    store = GalleryStore(tmp / "a.db", token=lambda: f"t{next(counter):04d}")
    store.create_collection(
        "c", parameter_set_id="ps", key_id="k", model_id="m", threshold=10, block_size=block_size
    )
    return store


def _tpl(subject: str, rid: str, blob: bytes | None = None) -> NewTemplate:
    paillier = blob or secrets.token_bytes(64)
    return NewTemplate(subject, rid, "m", "ps", "k", paillier, b"head-" + rid.encode())


def test_pragmas_are_durable_and_secure(tmp_path: Path) -> None:
    store = _store(tmp_path)
    q = store._query
    assert q("PRAGMA journal_mode")[0][0] == "wal"
    assert q("PRAGMA synchronous")[0][0] == 2  # FULL
    assert q("PRAGMA secure_delete")[0][0] == 1
    assert q("PRAGMA foreign_keys")[0][0] == 1
    assert os.stat(tmp_path / "a.db").st_mode & 0o077 == 0


def test_collections(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.get_collection("c").block_size == 4
    with pytest.raises(AlreadyExistsError):
        store.create_collection(
            "c", parameter_set_id="p", key_id="k", model_id="m", threshold=1, block_size=1
        )
    with pytest.raises(NotFoundError, match="unknown collection"):
        store.get_collection("nope")
    with pytest.raises(InvalidArgumentError):
        store.create_collection(
            "bad name!", parameter_set_id="p", key_id="k", model_id="m", threshold=1, block_size=1
        )


def test_add_is_idempotent_and_allocates_dense_slots(tmp_path: Path) -> None:
    store = _store(tmp_path)
    res = store.add_templates("c", [_tpl("alice", f"r{i}") for i in range(6)])
    assert [r.already_enrolled for r in res] == [False] * 6
    again = store.add_templates("c", [_tpl("alice", "r2"), _tpl("bob", "r9")])
    assert again[0].already_enrolled and again[0].template_id == res[2].template_id
    slots = [(t.block_no, t.slot) for t in store.pending_templates("c")]
    assert slots == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]


def test_batch_is_atomic(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(InvalidArgumentError):
        store.add_templates("c", [_tpl("ok", "r1"), _tpl("\x00bad", "r2")])
    assert store.stats("c").templates == 0


def test_put_block_places_and_drops_heads(tmp_path: Path) -> None:
    store = _store(tmp_path)
    res = store.add_templates("c", [_tpl("a", "r1"), _tpl("b", "r2")])
    store.put_block("c", 0, b"block-v1", [r.template_id for r in res], version=1)
    assert store.pending_templates("c") == []
    assert all(t.head is None for t in store.templates_of_subject("c", "a"))
    assert store.occupied_slots("c") == {(0, 0): "a", (0, 1): "b"}
    with pytest.raises(StoreError, match="version"):
        store.put_block("c", 0, b"stale", [], version=1)
    store.put_block("c", 0, b"block-v2", [], version=2)
    block = store.get_block("c", 0)
    assert block is not None and block.data == b"block-v2"


def test_relayout_moves_every_row_with_its_block_atomically(tmp_path: Path) -> None:
    """Issue 12: a re-layout moves the block and every template row of it in one transaction
    (cycles included); a move that would lose a row is refused and changes nothing."""
    store = _store(tmp_path)
    res = store.add_templates("c", [_tpl("a", "r1"), _tpl("b", "r2"), _tpl("d", "r3")])
    store.put_block("c", 0, b"v1", [r.template_id for r in res], version=1)
    store.put_block("c", 0, b"v2", [], version=2, moves={0: 2, 1: 0, 2: 1})  # a 3-cycle
    assert store.occupied_slots("c") == {(0, 2): "a", (0, 0): "b", (0, 1): "d"}
    with pytest.raises(StoreError, match="every template"):
        store.put_block("c", 0, b"v3", [], version=3, moves={0: 1, 1: 0})  # slot 2's row
    with pytest.raises(StoreError, match="every template"):
        store.put_block("c", 0, b"v3", [], version=3, moves={0: 1, 1: 1, 2: 2})
    assert store.occupied_slots("c") == {(0, 2): "a", (0, 0): "b", (0, 1): "d"}
    block = store.get_block("c", 0)
    assert block is not None and block.data == b"v2" and block.version == 2


def test_delete_frees_slots_for_reuse_and_leaves_no_bytes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    canary = b"CANARY-" + secrets.token_bytes(200) + b"-END"
    batch = [_tpl("keep", "r1"), _tpl("gone", "r2", canary), _tpl("keep", "r3")]
    res = store.add_templates("c", batch)
    store.put_block("c", 0, b"blk", [r.template_id for r in res], version=1)
    deleted = store.delete_subject("c", "gone")
    assert deleted.slots == ((0, 1),) and len(deleted.template_ids) == 1
    store.checkpoint()
    with pytest.raises(NotFoundError):
        store.delete_subject("c", "gone")
    assert store.list_subjects("c", limit=10) == ["keep"]
    new = store.add_templates("c", [_tpl("new", "r4")])
    assert store.templates_of_subject("c", "new")[0].slot == 1 and not new[0].already_enrolled
    wal = tmp_path / "a.db-wal"
    assert not wal.exists() or canary not in wal.read_bytes()
    assert canary not in (tmp_path / "a.db").read_bytes()
    assert store.integrity_check() == "ok"


def test_templates_at_and_stats(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_templates("c", [_tpl("a", "r1"), _tpl("b", "r2")])
    got = store.templates_at("c", [(0, 1), (0, 0)])
    assert [t.subject_id for t in got] == ["b", "a"]
    with pytest.raises(NotFoundError):
        store.templates_at("c", [(3, 3)])
    s = store.stats("c")
    assert (s.subjects, s.templates, s.pending_templates, s.blocks) == (2, 2, 2, 0)
    assert "paillier" not in repr(got[0]) and "head" not in repr(got[0])


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.add_templates("c", [_tpl("a", "r1")])
    store.close()
    again = GalleryStore(tmp_path / "a.db")
    assert again.list_subjects("c", limit=5) == ["a"]


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=30))
def test_slot_allocation_matches_lowest_free_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[bool, int]]
) -> None:
    """Model: a set of used positions; every insert takes the lowest free one."""
    store = _store(tmp_path_factory.mktemp("h"), block_size=3)
    used: dict[int, str] = {}
    for n, (insert, who) in enumerate(ops):
        subject = f"s{who}"
        if insert:
            expected = min(set(range(len(used) + 1)) - set(used))
            store.add_templates("c", [_tpl(subject, f"r{n}")])
            used[expected] = subject
        elif subject in used.values():
            store.delete_subject("c", subject)
            used = {p: s for p, s in used.items() if s != subject}
    records = store._records("collection=?", ("c",))
    assert {t.block_no * 3 + t.slot: t.subject_id for t in records} == used
    store.close()


def test_request_id_names_one_request(tmp_path: Path) -> None:
    """A resend for the same subject (a retry re-encrypts: the bytes differ) is "already
    enrolled"; a reuse for another subject is ALREADY_EXISTS, never a silent "OK" (issue 13,
    item 5)."""
    store = _store(tmp_path)
    [first] = store.add_templates("c", [_tpl("alice", "r1")])
    retry = NewTemplate("alice", "r1", "m", "ps", "k", b"p", b"re-encrypted head")
    [again] = store.add_templates("c", [retry])
    assert again.already_enrolled and again.template_id == first.template_id
    bob = NewTemplate("bob", "r1", "m", "ps", "k", b"p", b"head-r1")
    with pytest.raises(AlreadyExistsError, match="request id"):
        store.add_templates("c", [bob])
    verdicts = store.check_request_ids(
        "c", [_tpl("alice", "r1"), bob, _tpl("carol", "r7"), _tpl("dave", "r7")])
    assert [v is None for v in verdicts] == [True, False, True, False]
    assert store.list_subjects("c", limit=10) == ["alice"]


@pytest.mark.parametrize("bad", ["a\u202eb", "a\u200bb", "a\u0085b", "a\x7fb", "a\u2028b",
                                 "a b", "", "x" * 257, "e\u0301"])
def test_subject_alphabet(tmp_path: Path, bad: str) -> None:
    store = _store(tmp_path)
    with pytest.raises(InvalidArgumentError, match="NFC letters"):
        store.add_templates("c", [_tpl(bad, "r1")])
    store.add_templates("c", [_tpl("Jos\u00e9_M.Garc\u00eda-2@example.org", "r2"),
                              _tpl("\u674e\u5c0f\u9f99", "r3")])


def test_store_files_are_private(tmp_path: Path) -> None:
    """gallery.db, -wal and -shm are 0600 in a 0700 directory, even under a 0022 umask."""
    import os

    old = os.umask(0o022)
    try:
        store = GalleryStore(tmp_path / "data" / "g.db")
        store.create_collection("c", parameter_set_id="p", key_id="k", model_id="m",
                                threshold=1, block_size=4)
        store.add_templates("c", [_tpl("alice", "r1")])
        files = sorted((tmp_path / "data").iterdir())
        assert {f.name for f in files} >= {"g.db", "g.db-wal", "g.db-shm"}
        assert all(f.stat().st_mode & 0o077 == 0 for f in files), [oct(f.stat().st_mode)
                                                                     for f in files]
        assert (tmp_path / "data").stat().st_mode & 0o077 == 0
        store.close()
    finally:
        os.umask(old)


def test_threshold_out_of_range_is_invalid_argument(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(InvalidArgumentError, match="threshold"):
        store.create_collection("big", parameter_set_id="p", key_id="k", model_id="m",
                                threshold=(1 << 64) - 1, block_size=4)
