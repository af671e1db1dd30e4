"""``pura-audit``: run the privacy-attack evaluations and write ``<out>/index.html`` + JSON.

Every command loads real LFW descriptors (the cached identification split of
:func:`pura_client.datasets.embedded.embedded_identification_set`: 500 people with ≥ 2 images and
200 outsiders), splits the 500 into enrolled and public halves (:class:`AuditData`), runs its
evaluation(s) and writes one report. ``pura-audit all --out audit-report`` runs all six at the
small size (a few minutes on two cores).
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from pura.crypto.encoding import PCARotation
from pura.crypto.params import ParameterSet, get_preset
from pura_client.audit.data import AuditData, LabelledEmbeddings, system_threshold
from pura_client.audit.report import EvaluationResult, write_report

app = typer.Typer(
    help="Privacy-attack evaluations of Pura with HTML reports.", no_args_is_help=True
)

OutOption = Annotated[Path, typer.Option("--out", help="report folder (index.html, JSON, PNGs)")]
SeedOption = Annotated[int, typer.Option(help="seed of every random choice of the audit")]
PresetOption = Annotated[str, typer.Option(
    help="parameter preset: dlib-fast (2048-bit, the audit data are dlib descriptors) or dlib")]
QueriesOption = Annotated[int, typer.Option(help="mated and non-mated identifications each")]


@dataclass
class AuditContext:
    """Loaded data and the shared settings of one run."""

    data: AuditData
    out: Path
    seed: int
    params: ParameterSet

    @property
    def rotation(self) -> PCARotation:
        """PCA rotation fitted on public people only (never on enrolled ones)."""
        return PCARotation.fit(self.data.public.vectors, model_id=self.params.encoding.model_id)

    @property
    def tau(self) -> float:
        """System threshold as a squared distance (FMR 0.1% on public impostor pairs)."""
        return -system_threshold(self.data.public)


def load_context(out: Path, seed: int, preset: str) -> AuditContext:
    """Real LFW descriptors through the shared on-disk cache (computed once, ~3 min)."""
    from pura_client.datasets.embedded import embedded_identification_set

    s = embedded_identification_set(n_identities=500, seed=0, n_non_enrolled=200)
    data = AuditData.from_identification_set(
        s.gallery,
        s.gallery_labels,
        s.probes,
        s.probe_labels,
        s.non_enrolled,
        s.non_enrolled_labels,
        rng=np.random.default_rng(seed),
    )
    return AuditContext(data, out, seed, get_preset(preset))


def eval_probing(ctx: AuditContext) -> EvaluationResult:
    from pura_client.audit.probing import ProbingConfig, run_probing

    config = ProbingConfig(targets=20, seed=ctx.seed)
    return run_probing(ctx.data.enrolled, ctx.data.public, ctx.out, config)


def eval_impersonation(ctx: AuditContext) -> EvaluationResult:
    from pura_client.audit.impersonation import ImpersonationConfig, run_impersonation

    config = ImpersonationConfig(attempts=3000, gallery_sizes=(10, 100, 1000), seed=ctx.seed)
    d = ctx.data
    return run_impersonation(d.enrolled, d.public, d.nonmated, ctx.out, config)


def eval_linkability(ctx: AuditContext) -> EvaluationResult:
    from pura_client.audit.linkability import LinkabilityConfig, run_linkability
    from pura_client.audit.protect import DeploymentKeys

    rng = random.Random(ctx.seed)
    one = DeploymentKeys.generate(ctx.params, ctx.rotation, rng)
    two = DeploymentKeys.generate(ctx.params, ctx.rotation, rng)
    protected = {
        "Paillier template": (one.paillier_record, two.paillier_record),
        "CKKS head": (one.ckks_record, two.ckks_record),
    }
    config = LinkabilityConfig(people=150, seed=ctx.seed)
    return run_linkability(ctx.data.enrolled_with_probes(), protected, ctx.out, config)


def eval_inversion(
    ctx: AuditContext, victims: int, steps: int, b_attempts: int
) -> EvaluationResult:
    from pura_client.audit import _inversion_setup

    return _inversion_setup.run(ctx, victims, steps, b_attempts)


def eval_parity_and_leakage(ctx: AuditContext, queries: int) -> list[EvaluationResult]:
    """One recorded encrypted run feeds both the parity and the leakage evaluation."""
    from pura_client.audit.harness import EncryptedIdentification
    from pura_client.audit.leakage import LeakageInputs, canary_patterns, run_leakage
    from pura_client.audit.parity import run_parity, run_queries

    d = ctx.data
    tau = ctx.tau
    system = EncryptedIdentification(
        ctx.params, d.enrolled, ctx.rotation, tau, rng=random.Random(ctx.seed)
    )
    rng = np.random.default_rng(ctx.seed)
    mated = _sample(d.mated_probes, queries, rng)
    nonmated = _sample(d.nonmated, queries, rng)
    outcomes = run_queries(system, mated, nonmated)
    parity = run_parity(d.enrolled, mated, nonmated, outcomes, tau, ctx.out)
    patterns = canary_patterns(
        system.quantised_templates, np.vstack([d.enrolled.vectors, mated.vectors])
    )
    inputs = LeakageInputs(
        outcomes[0], outcomes[1], system.recorder.messages, patterns, ctx.params.encoding.scale_bits
    )
    return [parity, run_leakage(inputs, ctx.out)]


def _sample(data: LabelledEmbeddings, n: int, rng: np.random.Generator) -> LabelledEmbeddings:
    idx = np.sort(rng.choice(len(data), size=min(n, len(data)), replace=False))
    return LabelledEmbeddings(data.vectors[idx], tuple(data.labels[i] for i in idx))


def _finish(ctx: AuditContext, results: list[EvaluationResult], started: float) -> None:
    settings = {
        "seed": ctx.seed,
        "parameters": ctx.params.id,
        "enrolled": len(ctx.data.enrolled),
        "public": len(ctx.data.public),
        "nonmated": len(ctx.data.nonmated),
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    index = write_report(ctx.out, results, settings=settings)
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: "measured"}[r.passed]
        typer.echo(f"[{verdict:8}] {r.title} ({r.seconds:.1f} s): {r.summary}")
    typer.echo(f"report: {index} ({settings['total_seconds']} s)")


@app.command()
def probing(out: OutOption = Path("audit-report"), seed: SeedOption = 0) -> None:
    """Hill climbing on a score API vs. Pura's decision-only, budgeted identify."""
    started = time.perf_counter()
    ctx = load_context(out, seed, "dlib-fast")
    _finish(ctx, [eval_probing(ctx)], started)


@app.command()
def impersonation(out: OutOption = Path("audit-report"), seed: SeedOption = 0) -> None:
    """Master / attribute-subsphere / population synthetic embeddings vs. the gallery."""
    started = time.perf_counter()
    ctx = load_context(out, seed, "dlib-fast")
    _finish(ctx, [eval_impersonation(ctx)], started)


@app.command()
def linkability(
    out: OutOption = Path("audit-report"), seed: SeedOption = 0, preset: PresetOption = "dlib-fast"
) -> None:
    """Gomez-Barrero D↔sys: plaintext templates vs. Pura records under two key sets."""
    started = time.perf_counter()
    ctx = load_context(out, seed, preset)
    _finish(ctx, [eval_linkability(ctx)], started)


@app.command()
def inversion(
    out: OutOption = Path("audit-report"),
    seed: SeedOption = 0,
    victims: Annotated[int, typer.Option(help="victims of the image-space attack")] = 6,
    steps: Annotated[int, typer.Option(help="gradient steps per reconstruction")] = 80,
    b_attempts: Annotated[int, typer.Option(help="perfect-inverter attempts on B's view")] = 100,
) -> None:
    """White-box template inversion from a leaked template vs. from the servers' data."""
    started = time.perf_counter()
    ctx = load_context(out, seed, "dlib-fast")
    _finish(ctx, [eval_inversion(ctx, victims, steps, b_attempts)], started)


@app.command()
def parity(
    out: OutOption = Path("audit-report"),
    seed: SeedOption = 0,
    queries: QueriesOption = 20,
    preset: PresetOption = "dlib-fast",
) -> None:
    """Encrypted vs. plaintext identification (also writes the leakage audit of that run)."""
    started = time.perf_counter()
    ctx = load_context(out, seed, preset)
    _finish(ctx, eval_parity_and_leakage(ctx, queries), started)


@app.command()
def leakage(
    out: OutOption = Path("audit-report"),
    seed: SeedOption = 0,
    queries: QueriesOption = 20,
    preset: PresetOption = "dlib-fast",
) -> None:
    """Record every A↔B message of real identifications and test B's view (with parity)."""
    parity(out, seed, queries, preset)


@app.command()
def views(
    out: OutOption = Path("audit-views"),
    quick: Annotated[bool, typer.Option(help="300 people, 3 epochs (< 10 min on 2 cores)")] = (
        False
    ),
    people: Annotated[int | None, typer.Option(help="enrolled LFW people")] = None,
    seed: SeedOption = 0,
    preset: PresetOption = "dlib-fast",
    analyse_only: Annotated[bool, typer.Option(
        help="re-run the attacks on the recordings already in OUT/work")] = False,
    mated: Annotated[int | None, typer.Option(help="mated probes per epoch")] = None,
    nonmated: Annotated[int | None, typer.Option(help="non-mated probes per epoch")] = None,
) -> None:
    """Real `pura serve` A and B with --record: enrol LFW, probe, attack what they recorded."""
    from pura_client.audit.views import TARGETS, ViewsConfig, run_views

    if quick:
        config = ViewsConfig.quick(people or 300, seed, preset)
    else:
        config = ViewsConfig(people=people or 1000, profile=preset, seed=seed)
    config = dataclasses.replace(
        config, mated_per_epoch=config.mated_per_epoch if mated is None else mated,
        nonmated_per_epoch=config.nonmated_per_epoch if nonmated is None else nonmated)
    figures = run_views(out, config, log=typer.echo, analyse_only=analyse_only)
    for key in TARGETS:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[figures["verdicts"][key]]
        typer.echo(f"[{verdict:4}] {key} = {figures.get(key)}")
    typer.echo(f"views: {out / 'views.json'}, report: {out / 'index.html'}")


@app.command(name="all")
def run_all(
    out: OutOption = Path("audit-report"),
    seed: SeedOption = 0,
    queries: QueriesOption = 20,
    victims: Annotated[int, typer.Option(help="victims of the image-space attack")] = 6,
    steps: Annotated[int, typer.Option(help="gradient steps per reconstruction")] = 80,
    b_attempts: Annotated[int, typer.Option(help="perfect-inverter attempts on B's view")] = 100,
) -> None:
    """All six evaluations at the small size into one report."""
    started = time.perf_counter()
    ctx = load_context(out, seed, "dlib-fast")
    results = [
        eval_inversion(ctx, victims, steps, b_attempts),
        eval_linkability(ctx),
        eval_probing(ctx),
        eval_impersonation(ctx),
        *eval_parity_and_leakage(ctx, queries),
    ]
    _finish(ctx, results, started)


__all__ = ["AuditContext", "app", "load_context"]
