"""Hash-chained audit log: chaining, durability across reopen, tamper detection."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from pura.audit_log import GENESIS, AuditLog, verify_chain
from pura.errors import ConfigError


def _log(tmp: Path, n: int = 5) -> AuditLog:
    log = AuditLog(tmp / "audit.jsonl")
    for i in range(n):
        log.append(principal=f"p{i}", action="enroll", outcome="ok", collection="c", target=f"s{i}")
    return log


def test_chain_links_and_reopens(tmp_path: Path) -> None:
    log = _log(tmp_path)
    entries = log.entries()
    assert entries[0]["prev"] == GENESIS
    assert all(e["prev"] == p["hash"] for p, e in itertools.pairwise(entries))
    head = log.head
    again = AuditLog(tmp_path / "audit.jsonl")
    assert again.head == head and len(again) == 5
    assert again.verify().intact


@pytest.mark.parametrize("index", [0, 2, 4])
def test_edit_is_detected_at_first_bad_entry(tmp_path: Path, index: int) -> None:
    _log(tmp_path)
    path = tmp_path / "audit.jsonl"
    lines = path.read_text().splitlines()
    entry = json.loads(lines[index])
    entry["outcome"] = "denied"
    lines[index] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    result = verify_chain(path.read_text().splitlines())
    assert not result.intact and result.first_bad_index == index
    with pytest.raises(ConfigError, match=f"entry {index}"):
        AuditLog(path)


def test_deletion_and_reorder_are_detected(tmp_path: Path) -> None:
    _log(tmp_path)
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert verify_chain(lines[:2] + lines[3:]).first_bad_index == 2
    assert verify_chain([lines[1], lines[0], *lines[2:]]).first_bad_index == 0


def test_partial_tail_from_a_crash_is_dropped(tmp_path: Path) -> None:
    _log(tmp_path, 3)
    path = tmp_path / "audit.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"index":3,"half')
    log = AuditLog(path)
    assert len(log) == 3 and log.verify().intact
    log.append(principal="x", action="delete", outcome="ok")
    assert log.verify().intact and len(log) == 4
