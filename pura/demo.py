"""``pura demo``: the whole system on loopback, with real faces.

1. key generation (128-bit default profile; ``--profile fast`` is labelled ~112-bit everywhere),
2. a local CA with mTLS certificates for A, B and each client role,
3. servers B and A as two separate processes on free loopback ports, TLS on,
4. embedding of real faces with the client's torch pipeline of the profile's face model (SFace by
   default: YuNet, ArcFace alignment, the torch port of the network; weights found by path, SHA-256
   checked, never downloaded; cached on disk),
5. enrolment of a hundred people (client-side encryption, streaming BulkEnroll; ``--people``),
6. identification of probes of enrolled people and of people never enrolled,
7. a table of answers and timings.

The demo is an orchestrator: it drives the client SDK (``pura_client``) and the servers as
separate processes, exactly as a deployment would, so it imports the client package lazily.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pura.certs import make_demo_pki
from pura.crypto.encoding import PCARotation, l2_normalize, quantize
from pura.crypto.params import EncodingParams, get_preset
from pura.errors import ConfigError
from pura.keys import generate_key_set, load_public_keys
from pura.pipeline.config import default_threshold_sq
from pura.protocols.identify import threshold_units

COLLECTION = "demo"


def require_client(model_id: str = "") -> None:
    """Fail early and clearly on a server-only install (``pip install pura[server]``).

    The demo is the one ``pura`` command that plays the client too: it embeds faces with the
    client's torch pipeline. Servers must not need torch, dlib or matplotlib, so those come with
    the ``client`` extra only; this check turns an ImportError deep in the embedding code into a
    ConfigError that says what to install.
    """
    import importlib.util

    needed = ("torch", "pura_client", *(("dlib",) if model_id.startswith("dlib") else ()))
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"`pura demo` plays the client too and needs {', '.join(missing)}: install the "
            "\"client\" extra of pura (pyproject.toml; `make demo` installs everything)"
        )


@dataclass(frozen=True)
class Faces:
    """Embeddings for the demo: one gallery image per person, mated and unknown probes."""

    gallery: npt.NDArray[np.float64]
    gallery_labels: tuple[str, ...]
    probes: npt.NDArray[np.float64]
    probe_labels: tuple[str, ...]
    unknown: npt.NDArray[np.float64]
    unknown_labels: tuple[str, ...]


def _folder_images(folder: Path) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(
            q for q in person.iterdir() if q.suffix.lower() in (".jpg", ".jpeg", ".png")
        )
        if images:
            people[person.name] = images
    if not people:
        raise ConfigError(f"{folder} holds no Name/*.jpg images")
    return people


def _pick(folder: Path | None, people: int, probes: int) -> tuple[list[tuple[str, Path]], ...]:
    """(gallery, mated probes, unknown probes) as (label, path) lists, deterministic."""
    if folder is None:
        from pura_client.datasets.lfw import LFWDataset

        ds = LFWDataset.open()
        root = ds.root / "lfw-deepfunneled"
        folder = root
    by_person = _folder_images(folder)
    multi = [n for n, imgs in by_person.items() if len(imgs) >= 2]
    single = [n for n, imgs in by_person.items() if len(imgs) == 1]
    enrolled = multi[:people]
    if len(enrolled) < 2:
        raise ConfigError(f"{folder} needs people with at least two images")
    step = max(1, len(enrolled) // probes)
    mated = enrolled[::step][:probes]
    outsiders = (single or multi[people:])[:probes]
    return (
        [(n, by_person[n][0]) for n in enrolled],
        [(n, by_person[n][1]) for n in mated],
        [(n, by_person[n][0]) for n in outsiders],
    )


def _embed(
    items: Sequence[tuple[str, Path]], console: Console, model_id: str
) -> tuple[list[str], list[npt.NDArray[np.float64]]]:
    from pura_client.embedding.aligned import pipeline_for
    from pura_client.embedding.batch import embed_files
    from pura_client.embedding.cache import EmbeddingCache

    embedder = pipeline_for(model_id, device="auto")  # checks the weights' SHA-256 first
    results = embed_files(embedder, [p for _, p in items], cache=EmbeddingCache(), progress=True)
    labels, vectors = [], []
    for (label, _), result in zip(items, results, strict=True):
        if result.descriptor is None:
            console.print(f"  no face in an image of {label}: skipped (a result, not an error)")
            continue
        labels.append(label)
        vectors.append(result.descriptor.astype(np.float64))
    return labels, vectors


def load_faces(
    folder: Path | None, people: int, probes: int, console: Console,
    model_id: str = "sface_2021dec_int8bq",
) -> Faces:
    """Embeddings of the picked images with ``model_id``'s client pipeline (the collection's)."""
    gallery, mated, unknown = _pick(folder, people, probes)
    g_labels, g = _embed(gallery, console, model_id)
    p_labels, p = _embed(mated, console, model_id)
    u_labels, u = _embed(unknown, console, model_id)
    return Faces(np.stack(g), tuple(g_labels), np.stack(p), tuple(p_labels),
                 np.stack(u), tuple(u_labels))


class _PlainReference:
    """Plaintext 1:N on the same fixed-point vectors and threshold, to show the encrypted answer
    is the plaintext answer (the demo holds the embeddings; the servers never do)."""

    def __init__(self, pca: PCARotation, data: Faces, enc: EncodingParams) -> None:
        self.pca, self.scale = pca, enc.scale_bits
        self.tau = threshold_units(default_threshold_sq(enc.model_id), enc.scale_bits)
        self.gallery = np.stack([self._fixed(v) for v in data.gallery])
        self.labels = data.gallery_labels

    def _fixed(self, v: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        return quantize(self.pca.apply(l2_normalize(v)), self.scale)

    def identify(self, v: npt.NDArray[np.float64]) -> str | None:
        d = ((self.gallery - self._fixed(v)) ** 2).sum(axis=1)
        best = int(np.argmin(d))
        return self.labels[best] if int(d[best]) <= self.tau else None


class ServerProcess:
    """A ``pura serve`` child process; its port comes back through a ready file."""

    def __init__(self, args: list[str], ready: Path, log: Path) -> None:
        ready.unlink(missing_ok=True)
        self.log = log
        self._log_fh = open(log, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pura.cli", "serve", *args, "--ready-file", str(ready)],
            stdout=self._log_fh, stderr=subprocess.STDOUT,
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        )
        self.port = self._wait(ready)

    def _wait(self, ready: Path, timeout_s: float = 120.0) -> int:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if ready.exists():
                return int(ready.read_text())
            if self.proc.poll() is not None:
                raise ConfigError(f"server exited early; see {self.log}:\n"
                                  + self.log.read_text()[-2000:])
            time.sleep(0.2)
        raise ConfigError(f"server did not become ready; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log_fh.close()


def start_pair(
    workdir: Path, *, bulk_batch: int = 16, budget: int = 1000, workers: int = 1
) -> tuple[ServerProcess, ServerProcess]:
    """B then A, separate processes, mTLS, free loopback ports.

    ``bulk_batch`` 16: A acknowledges a BulkEnroll batch once it is committed, and the client's
    idle timeout counts from the last acknowledgement, so small batches keep a long stream
    visibly alive on a loaded machine (admission itself still runs in concurrent lanes)."""
    keys, tls = workdir / "keys", workdir / "tls"
    b = ServerProcess(["--role", "b", "--keys", str(keys / "b"), "--tls", str(tls),
                       "--data", str(workdir / "b-data"), "--workers", str(workers)],
                      workdir / "b.port", workdir / "b.log")
    try:
        a = ServerProcess(
            ["--role", "a", "--keys", str(keys / "a"), "--tls", str(tls),
             "--insecure-shared-host",
             "--data", str(workdir / "data"), "--peer", f"localhost:{b.port}",
             "--bulk-batch", str(bulk_batch), "--budget", str(budget),
             "--workers", str(workers)],
            workdir / "a.port", workdir / "a.log",
        )
    except BaseException:
        b.stop()
        raise
    return a, b


def run_demo(
    *, faces: Path | None, people: int, probes: int, profile: str, workdir: Path,
    console: Console,
) -> None:
    params = get_preset(profile)
    model_id = params.encoding.model_id
    fast = params.paillier.security_bits < 128
    label = " [yellow](FAST PROFILE ~112-bit, not for production)[/]" if fast else " (128-bit)"
    require_client(model_id)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    data = load_faces(faces, people, probes, console, model_id)
    timings["faces"] = time.perf_counter() - t
    console.print(f"faces: model {model_id} ({params.encoding.dim}-d), "
                  f"{len(data.gallery_labels)} people to enrol, {len(data.probe_labels)} "
                  f"probes of enrolled people, {len(data.unknown_labels)} of unknown people "
                  f"({timings['faces']:.1f} s)")

    t = time.perf_counter()
    with console.status("generating keys"):
        pub = generate_key_set(workdir / "keys", params)
    timings["keygen"] = time.perf_counter() - t
    console.print(f"keys: {params.paillier.name} + {params.ckks.name}{label}, key id {pub.key_id}"
                  f" ({timings['keygen']:.1f} s)")
    make_demo_pki(workdir / "tls")
    console.print("TLS: local CA, mTLS certificates for A, B, enroller, identifier, admin, auditor")

    a, b = start_pair(workdir)
    try:
        console.print(f"servers: B on 127.0.0.1:{b.port}, A on 127.0.0.1:{a.port} (separate "
                      "processes, TLS)")
        _session(workdir, a.port, data, console, timings, params.encoding)
    finally:
        a.stop()
        b.stop()


def _session(
    workdir: Path, port: int, data: Faces, console: Console, timings: dict[str, float],
    enc: EncodingParams,
) -> None:
    from pura_client.client import PuraClient

    from pura.service.run import load_pca

    tls, address = workdir / "tls", f"localhost:{port}"
    pca = load_pca(workdir / "keys" / "public", enc.model_id)
    with PuraClient.connect(address, COLLECTION, tls_dir=tls, cert_name="admin") as admin:
        admin.create_collection()
    trusted = load_public_keys(workdir / "keys" / "public")  # pinned: A cannot swap keys
    enroller = PuraClient.connect(address, COLLECTION, tls_dir=tls, cert_name="enroller",
                                  pca=pca, trusted_keys=trusted)
    identifier = PuraClient.connect(address, COLLECTION, tls_dir=tls, cert_name="identifier",
                                    pca=pca, trusted_keys=trusted)
    n = len(data.gallery_labels)
    t = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("enrolling (encrypt + BulkEnroll)", total=n)
        items = [(lab, data.gallery[i], uuid.uuid4().hex)
                 for i, lab in enumerate(data.gallery_labels)]
        statuses = enroller.bulk_enroll(items, on_status=lambda _s: bar.advance(task))
    timings["enrol"] = time.perf_counter() - t
    ok = sum(s.code == "enrolled" for s in statuses)
    console.print(f"enrolled {ok}/{n} templates in {timings['enrol']:.1f} s "
                  f"({ok / timings['enrol']:.1f} templates/s, client encryption included)")
    table = Table(title="Identification (encrypted end to end; the client sees no score)")
    for col in ("probe of", "enrolled", "answer", "plaintext", "ok", "enc s", "id s"):
        table.add_column(col, overflow="fold")
    plain = _PlainReference(pca, data, enc)
    agree = 0
    gallery = set(data.gallery_labels)
    latencies, correct, total = [], 0, 0
    probes = [*zip(data.probe_labels, data.probes, strict=True),
              *zip(data.unknown_labels, data.unknown, strict=True)]
    for label, vector in probes:
        t0 = time.perf_counter()
        parts = identifier.encryptor().query(vector)
        t1 = time.perf_counter()
        decision = identifier.identify_encrypted(parts)
        t2 = time.perf_counter()
        latencies.append(t2 - t0)
        expected = label if label in gallery else None
        good = decision.subject == expected
        reference = plain.identify(vector)
        agree += decision.subject == reference
        correct += good
        total += 1
        table.add_row(label, "yes" if label in gallery else "no",
                      decision.subject or "no match", reference or "no match",
                      "✓" if good else "✗", f"{t1 - t0:.2f}", f"{t2 - t1:.2f}")
    console.print(table)
    with PuraClient.connect(address, COLLECTION, tls_dir=tls, cert_name="auditor") as auditor:
        stats = auditor.stats()
    per_template = stats.template_bytes / max(1, stats.templates) / 1024
    console.print(
        f"{correct}/{total} answers correct, {agree}/{total} equal to plaintext 1:N on the same "
        f"fixed-point vectors and threshold; median end to end "
        f"{statistics.median(latencies):.2f} s per query over {stats.templates} templates"
    )
    console.print(f"storage: {per_template:.1f} KiB of Paillier ciphertext per template + "
                  f"{stats.block_bytes / 2**20:.1f} MiB of packed CKKS head blocks")
    console.print(f"bytes per query: {len(parts.paillier) + len(parts.ckks_head):,} "
                  f"(Paillier {len(parts.paillier):,}, CKKS {len(parts.ckks_head):,})")
    enroller.close()
    identifier.close()


__all__ = ["Faces", "ServerProcess", "load_faces", "run_demo", "start_pair"]
