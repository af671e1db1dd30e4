"""``pura-client``: enrol a folder, identify or verify an image, delete a subject.

    pura-client enroll FOLDER                  # FOLDER/Name/*.jpg, one template per image
    pura-client identify IMAGE                 # "match NAME" | "no match" | "no face"
    pura-client verify --subject NAME IMAGE    # "match" | "no match"
    pura-client delete NAME                    # prints the deletion receipt

Common options: ``--server`` (A's address), ``--collection``, ``--tls`` (directory made by
``pura certs``) and ``--cert`` (which role's certificate to present). Faces are embedded here,
on this machine (GPU when present), and encrypted here: the server never sees an image, a
descriptor, or a score.

Face model: each collection was enrolled under one model (A announces it); the client embeds with
that model's pipeline and PCA rotation. ``--model`` names the model you mean to use: when it is
not the collection's, the command stops before embedding anything and says so, with both model
ids: templates of two models cannot be compared, so switching models means re-enrolling the
collection under the new one.

Enrolment is resumable: each image's request id is derived from the collection, the subject
and the image bytes, so re-running after an interruption skips what the server committed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pura.crypto.encoding import PCARotation, load_shipped_pca
from pura.crypto.params import model_mismatch_message
from pura.errors import ParameterError, PuraError
from pura.keys import load_public_keys
from pura_client.client import DEFAULT_IDLE_TIMEOUT_S, PuraClient
from pura_client.pins import KnownKeys

if TYPE_CHECKING:
    from pura_client.embedding.batch import ImagePipeline

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pura client: enrol, identify, verify, delete.")
console = Console()

Server = Annotated[str, typer.Option(help="server A address")]
Collection = Annotated[str, typer.Option(help="collection name")]
Tls = Annotated[Path, typer.Option(help="directory with ca.pem and <cert>.pem/.key")]
Cert = Annotated[str, typer.Option(help="certificate (role) to present")]
Pca = Annotated[Path | None, typer.Option(help="PCA rotation .npz (default: shipped)")]
Keys = Annotated[Path | None, typer.Option(
    help="trusted public key directory (keygen's public/); pins the key id A must announce. "
         "Without it the keys are pinned on first use in $PURA_KNOWN_KEYS, else "
         "~/.config/pura/known_keys.json, and a changed key is refused")]
Model = Annotated[str, typer.Option(
    help="face model id to embed with (default: the collection's, as A announces it); another "
         "model than the collection's is refused: re-enrol the collection under it instead")]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _connect(
    server: str, collection: str, tls: Path, cert: str, pca: Path | None,
    keys: Path | None = None, idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S, *, pin: bool = True,
    model: str = "", what: str = "query",
) -> PuraClient:
    """A client for A. Commands that encrypt (``pin``) check A's keys before anything else:
    against ``--keys`` when given, else against the trust-on-first-use pin file; then the face
    model: the collection's (``parameters().model_id``), refused when ``model`` names another."""
    trusted = load_public_keys(keys) if keys is not None else None
    client = PuraClient.connect(server, collection, tls_dir=tls, cert_name=cert,
                                trusted_keys=trusted, idle_timeout_s=idle_timeout)
    try:
        if pin and trusted is None:
            KnownKeys().check(server, collection, client.public_keys())
        if pin:
            wanted = collection_model(client, model, what)
            client.use_pca(load_shipped_pca(wanted) if pca is None
                           else PCARotation.load(pca, model_id=wanted))
    except BaseException:
        client.close()
        raise
    return client


def collection_model(client: PuraClient, model: str, what: str) -> str:
    """The collection's face model; ParameterError naming both ids when ``model`` is another."""
    announced = str(client.parameters().model_id)
    if model and model != announced:
        raise ParameterError(model_mismatch_message(client.collection, announced, model, what))
    return announced


def _fail(exc: PuraError) -> typer.Exit:
    console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
    return typer.Exit(code=2)


def _embedder(model_id: str) -> ImagePipeline:
    """Imported lazily: torch loads in seconds, and delete/--help need none of it."""
    from pura_client.embedding.aligned import pipeline_for

    return pipeline_for(model_id, device="auto")


def _descriptor(image: Path, model_id: str) -> npt.NDArray[np.float32] | None:
    """The descriptor of the largest face, or None when the image holds no face."""
    from pura_client.embedding.batch import embed_files
    from pura_client.embedding.cache import EmbeddingCache

    [result] = embed_files(_embedder(model_id), [image], cache=EmbeddingCache())
    return result.descriptor


def folder_items(folder: Path) -> list[tuple[str, Path]]:
    """(subject, image) for every FOLDER/Name/image, sorted."""
    items = [
        (person.name, image)
        for person in sorted(p for p in folder.iterdir() if p.is_dir())
        for image in sorted(person.iterdir())
        if image.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise typer.BadParameter(f"{folder} holds no Name/*.jpg images")
    return items


def request_id(collection: str, subject: str, image: Path) -> str:
    digest = hashlib.sha256(f"{collection}\0{subject}\0".encode() + image.read_bytes())
    return digest.hexdigest()[:32]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


@app.command()
def enroll(
    folder: Annotated[Path, typer.Argument(help="FOLDER/Name/*.jpg")],
    server: Server = "localhost:50051", collection: Collection = "default",
    tls: Tls = Path(".pura/tls"), cert: Cert = "enroller", pca: Pca = None, keys: Keys = None,
    idle_timeout: Annotated[float, typer.Option(
        help="seconds without progress (no item sent, no status received) before the stream "
             "fails; there is no total deadline")] = DEFAULT_IDLE_TIMEOUT_S,
    model: Model = "",
) -> None:
    """Embed, encrypt and enrol every image of a folder of people."""
    from pura_client.embedding.batch import embed_files
    from pura_client.embedding.cache import EmbeddingCache

    items = folder_items(folder)
    try:
        client = _connect(server, collection, tls, cert, pca, keys, idle_timeout, model=model,
                          what="enrolment")
    except PuraError as exc:
        raise _fail(exc) from None
    model_id = str(client.parameters().model_id)
    results = embed_files(_embedder(model_id), [p for _, p in items], cache=EmbeddingCache(),
                          progress=True)
    found = [(s, r.descriptor, request_id(collection, s, p))
             for (s, p), r in zip(items, results, strict=True) if r.descriptor is not None]
    console.print(f"{len(found)} faces in {len(items)} images "
                  f"({len(items) - len(found)} without a face, skipped; model {model_id})")
    try:
        with client, _progress() as bar:
            task = bar.add_task("encrypting + enrolling", total=len(found))
            statuses = client.bulk_enroll(found, on_status=lambda _s: bar.advance(task))
    except PuraError as exc:
        raise _fail(exc) from None
    for code in ("enrolled", "already-enrolled", "rejected"):
        count = sum(s.code == code for s in statuses)
        if count:
            console.print(f"{code}: {count}")
    for s in statuses:
        if s.code == "rejected":
            console.print(f"  rejected {s.request_id}: {s.message}")


@app.command()
def identify(
    image: Annotated[Path, typer.Argument()],
    server: Server = "localhost:50051", collection: Collection = "default",
    tls: Tls = Path(".pura/tls"), cert: Cert = "identifier", pca: Pca = None, keys: Keys = None,
    model: Model = "",
) -> None:
    """1:N: who is this? Prints "match NAME", "no match" or "no face"."""
    try:
        with _connect(server, collection, tls, cert, pca, keys, model=model) as client:
            descriptor = _descriptor(image, str(client.parameters().model_id))
            if descriptor is None:
                console.print("no face")
                return
            decision = client.identify(descriptor)
    except PuraError as exc:
        raise _fail(exc) from None
    console.print(f"match {decision.subject}" if decision.matched else "no match")


@app.command()
def verify(
    image: Annotated[Path, typer.Argument()],
    subject: Annotated[str, typer.Option(help="claimed identity")],
    server: Server = "localhost:50051", collection: Collection = "default",
    tls: Tls = Path(".pura/tls"), cert: Cert = "identifier", pca: Pca = None, keys: Keys = None,
    model: Model = "",
) -> None:
    """1:1: is this SUBJECT? Prints "match", "no match" or "no face"."""
    try:
        with _connect(server, collection, tls, cert, pca, keys, model=model) as client:
            descriptor = _descriptor(image, str(client.parameters().model_id))
            if descriptor is None:
                console.print("no face")
                return
            matched = client.verify(subject, descriptor)
    except PuraError as exc:
        raise _fail(exc) from None
    console.print("match" if matched else "no match")


@app.command()
def delete(
    subject: Annotated[str, typer.Argument()],
    server: Server = "localhost:50051", collection: Collection = "default",
    tls: Tls = Path(".pura/tls"), cert: Cert = "admin",
) -> None:
    """Delete every template of SUBJECT; prints the receipt."""
    try:
        with _connect(server, collection, tls, cert, None, pin=False) as client:
            receipt = client.delete(subject)
    except PuraError as exc:
        raise _fail(exc) from None
    console.print(f"deleted {receipt.subject_id}: {receipt.templates_removed} templates, "
                  f"{receipt.blocks_refreshed} blocks refreshed at {receipt.deleted_at}; "
                  f"audit entry {receipt.audit_entry_hash}")


__all__ = ["app", "folder_items", "request_id"]

if __name__ == "__main__":
    app()
