"""Where the exact stage's CPU goes, per party and round (issue 11, latency).

``python -m bench.exact_profile [--preset default] [--size 1000] [--queries 4] [--b-known]``

One process, serial engine (no worker processes), so each protocol function's CPU is its
thread time, charged to the party whose code ran (A's ``start_*``/``finish_*``, B's
``helper_*``; the label opening's two halves). The query is admitted, preselected and
served first (untimed), as ``Identifier.identify`` does beside the exact stage; then
``ServerA.match`` and the label opening are timed. The first query is a warm-up; then
``--queries`` mated probes and one non-mated probe are timed.

``--b-known``: a projection, not the product path. B's partial decryptions of the copies it
served are computed before the round (untimed) and handed to ``ServerB.known_partials``, as B
could do if it stored its partial of each copy and re-randomised served copies with pooled
``(h_N^ρ, h_N^{ρ·sk_B})`` pairs (docs/architecture.md, "Oblivious candidates").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from types import ModuleType
from typing import Any

from bench.data import face_like_gallery, synthetic_probes
from bench.pura_path import SEARCH, PuraGallery, _PreparedSource, encrypt_probe, warm_candidates
from bench.run import SYNTHETIC_THRESHOLD, build_system
from pura.crypto.params import get_preset
from pura.protocols import candidates as cand
from pura.protocols import identify as ident
from pura.protocols import secure_distance as sd
from pura.protocols import secure_min
from pura.protocols.identify import threshold_units
from pura.protocols.messages import AdmittedTemplate
from pura.protocols.tickets import TicketKind

#: (module, function, label): the functions whose own CPU is charged to a party and round.
TIMED: list[tuple[ModuleType, str, str]] = [
    (ident, "draw_masks", "A distance: masks + corrections (beside preselection)"),
    (ident, "start_distance", "A distance: partial decryptions of the stream"),
    (ident, "finish_distance", "A distance: finish"),
    (ident, "helper_blinded_product", "B distance: partial decryptions + products"),
    (secure_min, "start_argmin", "A argmin: start"),
    (secure_min, "finish_argmin", "A argmin: finish"),
    (ident, "helper_argmin", "B argmin"),
    (ident, "start_threshold", "A threshold: start"),
    (ident, "finish_threshold", "A threshold: finish"),
    (ident, "helper_threshold", "B threshold"),
    (cand, "finish_label", "A label opening"),
    (cand, "open_label", "B label opening"),
]


class Charges:
    """Own (exclusive) thread time per label: nested timed calls are charged to themselves."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []

    def wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            self._stack.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                self.seconds[label] += spent - self._stack.pop()
                if self._stack:
                    self._stack[-1] += spent

        return timed

    def install(self) -> list[tuple[ModuleType, str, Any]]:
        """Wrap every :data:`TIMED` function; returns what :func:`uninstall` puts back."""
        saved = [(module, name, getattr(module, name)) for module, name, _ in TIMED]
        for module, name, label in TIMED:
            setattr(module, name, self.wrap(getattr(module, name), label))
        return saved


def uninstall(saved: list[tuple[ModuleType, str, Any]]) -> None:
    for module, name, fn in saved:
        setattr(module, name, fn)


def profile(preset: str, size: int, queries: int, b_known: bool, seed: int = 7) -> dict[str, Any]:
    charges = Charges()
    saved = charges.install()
    params = get_preset(preset)
    system = build_system(params, seed, 1)
    pca = system.pca
    vectors = face_like_gallery(size, pca.mean, pca.cov, pca.matrix, seed=seed)
    gallery = PuraGallery(system, vectors)
    probes = synthetic_probes(vectors, queries + 1, 1, seed=seed + 1)
    tau = threshold_units(SYNTHETIC_THRESHOLD, params.encoding.scale_bits)
    server_a, identifier = system.server_a, system.identifier
    totals: list[float] = []
    try:
        for j, probe in enumerate(probes.vectors):
            warm_candidates(gallery, probe)
            head, query = encrypt_probe(system, probe)
            session = server_a.session(TicketKind.QUERY)
            checked = server_a.check_query(query, session)
            source = _PreparedSource(gallery)
            served = identifier.candidates(gallery.index, head, source, session)
            ahead = server_a.draw_masks(checked, len(served.entries))
            if b_known:
                copies = [t for _, t in served.entries if isinstance(t, AdmittedTemplate)]
                stream = sd._stream_cts(system.exact.template, copies)
                share_b = system.keys.share_b
                system.server_b.known_partials.update(
                    {int(c.value): share_b.partial_decrypt(c) for c in stream})
            started = time.thread_time()
            result = server_a.match(checked, served.entries, tau, session, ahead)
            if result.matched and served.request_id is not None and result.label is not None:
                identifier._open(served.request_id, int(result.label), source,
                                 served.labels, session)
            spent = time.thread_time() - started
            if j == 0:
                charges.seconds.clear()
            else:
                totals.append(spent)
            server_a.refill(SEARCH.top_k)
            system.server_b.refill(SEARCH.top_k)
    finally:
        gallery.close()
        uninstall(saved)
    n = len(totals)
    per_query = {label: s / n for label, s in sorted(charges.seconds.items())}
    return {
        "preset": preset, "size": size, "queries_timed": n, "b_known_projection": b_known,
        "cpu_per_query_s": per_query,
        "a_s": sum(v for k, v in per_query.items() if k.startswith("A ")),
        "b_s": sum(v for k, v in per_query.items() if k.startswith("B ")),
        "exact_stage_s_median": sorted(totals)[n // 2],
        "exact_stage_s_samples": totals,
    }


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m bench.exact_profile", description=__doc__)
    cli.add_argument("--preset", default="default")
    cli.add_argument("--size", type=int, default=1000)
    cli.add_argument("--queries", type=int, default=4)
    cli.add_argument("--b-known", action="store_true")
    a = cli.parse_args(argv)
    json.dump(profile(a.preset, a.size, a.queries, a.b_known), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
