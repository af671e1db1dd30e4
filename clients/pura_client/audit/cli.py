"""``pura-audit``: run the privacy-attack evaluations and write ``<out>/index.html`` + JSON.

Server views are read where the servers run: ``pura-audit views --out DIR`` starts real
``pura serve`` A and B processes with ``--record``, enrols LFW, probes, and leaves the
recordings in ``DIR/work``. The evaluations that read what A or B holds or sees (parity of
the servers' answers, leakage of B's views, linkability of what A stored, inversion from A's
records and B's exact-stage values, and the probing oracle's decision rule) read those
recordings (``--recordings DIR``; made first with ``--quick`` sizes when ``DIR`` holds none).
Impersonation, and the image-space part of inversion, are about the face model and the
embedding space, not a server's view: they run in-process on LFW descriptors.

``pura-audit all --out audit-report`` runs all six plus the views attacks into one report.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from pura_client.audit.data import AuditData
from pura_client.audit.report import EvaluationResult, write_report

if TYPE_CHECKING:
    from pura_client.audit.recorded import RecordedRun

app = typer.Typer(
    help="Privacy-attack evaluations of Pura with HTML reports.", no_args_is_help=True
)

OutOption = Annotated[Path, typer.Option("--out", help="report folder (index.html, JSON, PNGs)")]
SeedOption = Annotated[int, typer.Option(help="seed of every random choice of the audit")]
PresetOption = Annotated[str, typer.Option(
    help="parameter preset: dlib-fast (2048-bit, the audit data are dlib descriptors) or dlib")]
RecordingsOption = Annotated[Path | None, typer.Option(
    "--recordings",
    help="a `pura-audit views --out` folder: the server-view evaluations read its recordings "
         "(default OUT/views; a `views --quick` run is made there first when it has none)")]
VictimsOption = Annotated[int, typer.Option(help="victims of the image-space attack")]
StepsOption = Annotated[int, typer.Option(help="gradient steps per reconstruction")]
LinkPeopleOption = Annotated[int, typer.Option(
    help="people enrolled in the second deployment of the linkability evaluation")]


@dataclass
class AuditContext:
    """Loaded LFW descriptors of the in-process evaluations and the shared settings."""

    data: AuditData
    out: Path
    seed: int


def load_context(out: Path, seed: int) -> AuditContext:
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
    return AuditContext(data, out, seed)


def load_recordings(out: Path, recordings: Path | None, seed: int,
                    log: Callable[[str], Any] = typer.echo) -> RecordedRun:
    """The recorded ``views`` run the server-view evaluations read; made first (``--quick``
    sizes) when the folder holds none."""
    from pura_client.audit.recorded import RecordedRun
    from pura_client.audit.views import ViewsConfig, run_views

    folder = recordings if recordings is not None else out / "views"
    if not (folder / "work" / "run.json").exists():
        log(f"no recordings in {folder}: running `pura-audit views --quick --out {folder}`")
        run_views(folder, ViewsConfig.quick(seed=seed), log=log)
    return RecordedRun(folder)


def eval_views(rec: RecordedRun) -> EvaluationResult:
    """The views attacks' section (each key, its target and verdict) from ``views.json``."""
    from pura_client.audit.views import evaluation

    figures = json.loads((rec.out / "views.json").read_text())
    return evaluation(figures, float(figures["settings"].get("total_seconds", 0.0)))


def eval_probing(rec: RecordedRun, out: Path, seed: int) -> EvaluationResult:
    from pura_client.audit.probing import ProbingConfig, run_recorded_probing

    return run_recorded_probing(rec, out, ProbingConfig(targets=20, seed=seed))


def eval_impersonation(ctx: AuditContext) -> EvaluationResult:
    from pura_client.audit.impersonation import ImpersonationConfig, run_impersonation

    config = ImpersonationConfig(attempts=3000, gallery_sizes=(10, 100, 1000), seed=ctx.seed)
    d = ctx.data
    result = run_impersonation(d.enrolled, d.public, d.nonmated, ctx.out, config)
    result.notes.append(
        "In-process on LFW descriptors: synthetic embeddings against the plaintext decision "
        "rule are a property of the face model's embedding space, not of a server's view. "
        "The real-server counterpart is wolf_capture of the views section."
    )
    return result


def eval_linkability(rec: RecordedRun, out: Path, seed: int, people: int) -> EvaluationResult:
    from pura_client.audit.linkability import LinkabilityConfig, run_recorded_linkability

    return run_recorded_linkability(rec, out, LinkabilityConfig(people=people, seed=seed),
                                    log=typer.echo)


def eval_inversion(rec: RecordedRun, out: Path, victims: int, steps: int) -> EvaluationResult:
    from pura_client.audit import _inversion_setup

    return _inversion_setup.run(rec, out, victims, steps)


def eval_parity_and_leakage(rec: RecordedRun, out: Path) -> list[EvaluationResult]:
    """The servers' answers (parity) and B's recorded views (leakage) of one ``views`` run."""
    from pura_client.audit.leakage import LeakageInputs, run_leakage
    from pura_client.audit.parity import run_parity

    return [run_parity(rec, out), run_leakage(LeakageInputs.of(rec), out)]


def _finish(out: Path, results: list[EvaluationResult], started: float,
            rec: RecordedRun | None = None, ctx: AuditContext | None = None) -> None:
    settings: dict[str, Any] = {"total_seconds": round(time.perf_counter() - started, 1)}
    if rec is not None:
        settings.update({
            "recordings": str(rec.out), "parameters": rec.params.id,
            "recorded_people": rec.config.people, "recorded_epochs": rec.run.epoch_sizes,
            "recorded_probes": len(rec.run.probes), "recorded_seed": rec.config.seed,
        })
    if ctx is not None:
        settings.update({"seed": ctx.seed, "in_process_enrolled": len(ctx.data.enrolled),
                         "in_process_public": len(ctx.data.public),
                         "in_process_nonmated": len(ctx.data.nonmated)})
    index = write_report(out, results, settings=settings)
    for r in results:
        verdict = {True: "PASS", False: "FAIL", None: "measured"}[r.passed]
        typer.echo(f"[{verdict:8}] {r.title} ({r.seconds:.1f} s): {r.summary}")
    typer.echo(f"report: {index} ({settings['total_seconds']} s)")


@app.command()
def probing(out: OutOption = Path("audit-report"), seed: SeedOption = 0,
            recordings: RecordingsOption = None) -> None:
    """Hill climbing on a score API vs. the decision-only, budgeted identify of the recorded
    servers (their gallery, their threshold, their answers)."""
    started = time.perf_counter()
    rec = load_recordings(out, recordings, seed)
    _finish(out, [eval_probing(rec, out, seed)], started, rec)


@app.command()
def impersonation(out: OutOption = Path("audit-report"), seed: SeedOption = 0) -> None:
    """Master / attribute-subsphere / population synthetic embeddings vs. the gallery."""
    started = time.perf_counter()
    ctx = load_context(out, seed)
    _finish(out, [eval_impersonation(ctx)], started, ctx=ctx)


@app.command()
def linkability(
    out: OutOption = Path("audit-report"), seed: SeedOption = 0,
    recordings: RecordingsOption = None, people: LinkPeopleOption = 150,
) -> None:
    """Gomez-Barrero D↔sys: plaintext templates vs. what A stored in two real deployments."""
    started = time.perf_counter()
    rec = load_recordings(out, recordings, seed)
    _finish(out, [eval_linkability(rec, out, seed, people)], started, rec)


@app.command()
def inversion(
    out: OutOption = Path("audit-report"),
    seed: SeedOption = 0,
    recordings: RecordingsOption = None,
    victims: VictimsOption = 6,
    steps: StepsOption = 80,
) -> None:
    """White-box template inversion from a leaked template vs. from the servers' records."""
    started = time.perf_counter()
    rec = load_recordings(out, recordings, seed)
    _finish(out, [eval_inversion(rec, out, victims, steps)], started, rec)


@app.command()
def parity(out: OutOption = Path("audit-report"), seed: SeedOption = 0,
           recordings: RecordingsOption = None) -> None:
    """The recorded servers' answers vs. plaintext identification (also writes the leakage
    audit of the same recordings)."""
    started = time.perf_counter()
    rec = load_recordings(out, recordings, seed)
    _finish(out, eval_parity_and_leakage(rec, out), started, rec)


@app.command()
def leakage(out: OutOption = Path("audit-report"), seed: SeedOption = 0,
            recordings: RecordingsOption = None) -> None:
    """B's recorded views and every recorded A↔B payload (with parity)."""
    parity(out, seed, recordings)


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
    epoch_queries: Annotated[int, typer.Option(
        help="servers' --epoch-queries (0: a layout epoch per gallery version)")] = 0,
) -> None:
    """Real `pura serve` A and B with --record: enrol LFW, probe, attack what they recorded."""
    from pura_client.audit.views import TARGETS, ViewsConfig, run_views

    if quick:
        config = ViewsConfig.quick(people or 300, seed, preset)
    else:
        config = ViewsConfig(people=people or 1000, profile=preset, seed=seed)
    config = dataclasses.replace(
        config, mated_per_epoch=config.mated_per_epoch if mated is None else mated,
        nonmated_per_epoch=config.nonmated_per_epoch if nonmated is None else nonmated,
        epoch_queries=epoch_queries)
    figures = run_views(out, config, log=typer.echo, analyse_only=analyse_only)
    for key in TARGETS:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[figures["verdicts"][key]]
        typer.echo(f"[{verdict:4}] {key} = {figures.get(key)}")
    typer.echo(f"views: {out / 'views.json'}, report: {out / 'index.html'}")


@app.command(name="all")
def run_all(
    out: OutOption = Path("audit-report"),
    seed: SeedOption = 0,
    recordings: RecordingsOption = None,
    victims: VictimsOption = 6,
    steps: StepsOption = 80,
    people: LinkPeopleOption = 150,
) -> None:
    """The views attacks and all six evaluations into one report; the server-view ones read
    the recordings of one `pura-audit views` run."""
    started = time.perf_counter()
    rec = load_recordings(out, recordings, seed)
    ctx = load_context(out, seed)
    results = [
        eval_views(rec),
        *eval_parity_and_leakage(rec, out),
        eval_linkability(rec, out, seed, people),
        eval_probing(rec, out, seed),
        eval_inversion(rec, out, victims, steps),
        eval_impersonation(ctx),
    ]
    _finish(out, results, started, rec, ctx)


__all__ = ["AuditContext", "app", "load_context", "load_recordings"]
