"""``pura``: key generation, certificates, the two servers, and the demo.

    pura keygen --out .pura/keys [--profile default|fast]
    pura certs  --out .pura/tls
    pura serve  --role b --keys .pura/keys/b --listen 127.0.0.1:50052
    pura serve  --role a --keys .pura/keys/a --peer localhost:50052 --listen 127.0.0.1:50051
    pura demo   [--faces FOLDER] [--people 100] [--profile default|fast]
    pura status COLLECTION [--server localhost:50051] [--tls .pura/tls] [--cert auditor]

The default profile is the 128-bit one (Paillier 3072, CKKS 8192) with the SFace face model;
``fast`` (Paillier 2048, ~112-bit, same model) is always labelled as such in output. ``dlib`` /
``dlib-fast`` keep dlib's ResNet selectable, ``edgeface-xs[-fast]`` / ``edgeface-xxs[-fast]``
select the 512-d EdgeFace models (CC BY-NC-SA: evaluation and non-commercial use only). The
profile fixes the face model of every collection served under those keys; changing the model
means new keys and re-enrolling every collection.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pura.certs import make_demo_pki
from pura.config import RAY_ADDRESS_ENV, Limits, ServerConfig, environment_ray_address
from pura.crypto.params import get_preset
from pura.errors import ConfigError, PuraError
from pura.keys import generate_key_set

app = typer.Typer(
    add_completion=False, no_args_is_help=True,
    help="Pura: key generation, certificates, servers A and B, and the demo.",
)
console = Console()
PROFILE_HELP = ("default (SFace, 128-bit), fast (SFace, labelled ~112-bit), dlib, dlib-fast, "
                "edgeface-xs[-fast], edgeface-xxs[-fast] (non-commercial weights)")


def _fail(exc: PuraError) -> typer.Exit:
    console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}")
    return typer.Exit(code=2)


@app.command()
def keygen(
    out: Annotated[Path, typer.Option(help="directory for a/, b/ and public/")] = Path(
        ".pura/keys"
    ),
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "default",
) -> None:
    """Generate threshold Paillier shares and CKKS contexts for A, B and clients."""
    try:
        params = get_preset(profile)
        pub = generate_key_set(out, params)
    except PuraError as exc:
        raise _fail(exc) from None
    label = "" if params.paillier.security_bits >= 128 else " [yellow](FAST PROFILE, ~112-bit)[/]"
    console.print(f"key id {pub.key_id}, parameter set {params.id}{label}, face model "
                  f"{params.encoding.model_id} ({params.encoding.dim}-d)")
    console.print(f"  server A: {out / 'a'}   server B: {out / 'b'}   clients: {out / 'public'}")


@app.command()
def certs(
    out: Annotated[Path, typer.Option(help="directory for the CA and certificates")] = Path(
        ".pura/tls"
    ),
    host: Annotated[list[str] | None, typer.Option(help="server host names / IPs")] = None,
) -> None:
    """Make a local CA, server certificates for A and B, and one client certificate per role."""
    made = make_demo_pki(out, hosts=host or ["localhost", "127.0.0.1"])
    console.print(f"CA and {len(made) - 1} certificates in {out}: {', '.join(sorted(made))}")


@app.command()
def serve(
    role: Annotated[str, typer.Option(help="a or b")] = "",
    keys: Annotated[Path | None, typer.Option(help="this server's key directory")] = None,
    listen: Annotated[str, typer.Option()] = "127.0.0.1:0",
    data: Annotated[Path, typer.Option(
        help="data directory (A: the gallery; B: its candidate copies)")] = Path(".pura/data"),
    tls: Annotated[Path, typer.Option(help="directory made by `pura certs`")] = Path(".pura/tls"),
    peer: Annotated[str, typer.Option(help="server B's address (A only)")] = "",
    forbid: Annotated[
        list[Path] | None, typer.Option(help="key dirs this server must not be able to read")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (overrides flags)")] = None,
    ready_file: Annotated[Path | None, typer.Option(help="write the bound port here")] = None,
    dev: Annotated[bool, typer.Option(help="enable reflection; allow --no-tls")] = False,
    no_tls: Annotated[bool, typer.Option(help="plaintext (only with --dev)")] = False,
    budget: Annotated[int, typer.Option(help="queries per principal per hour")] = 100,
    bulk_batch: Annotated[int, typer.Option(help="templates per BulkEnroll commit")] = 64,
    workers: Annotated[int, typer.Option(help="worker processes for Paillier loops")] = 1,
    scoring_workers: Annotated[int, typer.Option(
        help="A: local processes scoring CKKS preselection blocks (1 = in-process)")] = 1,
    ray_address: Annotated[str | None, typer.Option(
        help=f"A: Ray cluster holding the preselection shards ('auto', 'host:port' or "
             f"'ray://host:port'); default: ${RAY_ADDRESS_ENV}, else no Ray")] = None,
    ray_shards: Annotated[int | None, typer.Option(
        help="A: shard actors on the Ray cluster (default: one per Ray node with CPUs)")] = None,
    metrics_listen: Annotated[str | None, typer.Option(
        help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 0.0.0.0:9100)")] = None,
    record: Annotated[Path | None, typer.Option(
        help="AUDITOR TOOL, evaluation galleries only: write every A<->B payload (and A's "
             "candidates and preselection secrets) in the clear to this directory")] = None,
    epoch_queries: Annotated[int, typer.Option(
        help="identifications per secret layout epoch (same on A and B; 0 = until the "
             "gallery changes)")] = 0,
    insecure_shared_host: Annotated[bool, typer.Option(
        help="DEMO/TESTS ONLY: A and B run as one user on one host; skip the check that A "
             "cannot read the sibling key directory of B")] = False,
) -> None:
    """Run server A or B until SIGTERM.

    Preselection scoring on A runs in-process by default; --scoring-workers spreads the CKKS
    block products over local processes, --ray-address (or $PURA_RAY_ADDRESS) over Ray shard
    actors that hold the blocks (public CKKS context only, never a secret key)."""
    from pura.service.run import serve_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if config is not None:
            cfg = ServerConfig.from_yaml(config, environ=os.environ)
        elif keys is None:
            raise ConfigError("--keys (or --config) is required")
        else:
            cfg = ServerConfig(
                role=role, listen=listen, key_dir=keys, data_dir=data,
                tls_dir=None if no_tls else tls, peer=peer,
                forbidden_key_dirs=tuple(forbid or ()), dev=dev, engine_workers=workers,
                scoring_workers=scoring_workers,
                ray_address=ray_address or environment_ray_address(os.environ, role),
                ray_shards=ray_shards, record_dir=record, metrics_listen=metrics_listen,
                shared_host_keys=insecure_shared_host, epoch_queries=epoch_queries,
                limits=Limits(query_budget=budget, bulk_batch=bulk_batch),
            )
        serve_forever(cfg, ready_file=ready_file)
    except PuraError as exc:
        raise _fail(exc) from None


@app.command()
def demo(
    faces: Annotated[Path | None, typer.Option(help="folder of Name/*.jpg (default: LFW)")] = None,
    people: Annotated[int, typer.Option(
        help="identities to enrol (50 keeps a first run on 2 shared cores under 3 minutes: "
             "enrolment at 3072 bits costs ~0.9 CPU-s per template and an identification "
             "~4 s, bench/README.md)")] = 50,
    probes: Annotated[int, typer.Option(help="probes of enrolled and of unknown people")] = 6,
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "default",
    workdir: Annotated[Path, typer.Option(help="where keys, certs and data go")] = Path(
        ".pura/demo"
    ),
) -> None:
    """Keys, certs, A and B as separate TLS processes, real enrolment and identification."""
    from pura.demo import run_demo

    try:
        run_demo(faces=faces, people=people, probes=probes, profile=profile, workdir=workdir,
                 console=console)
    except PuraError as exc:
        raise _fail(exc) from None


@app.command()
def status(
    collection: Annotated[str, typer.Argument(help="collection to report")],
    server: Annotated[str, typer.Option(help="server A address")] = "localhost:50051",
    tls: Annotated[Path, typer.Option(help="directory made by `pura certs`")] = Path(
        ".pura/tls"),
    cert: Annotated[str, typer.Option(help="certificate (role) to present")] = "auditor",
) -> None:
    """A collection's figures (Stats RPC) and the preselection scorer: in-process, a pool of
    worker processes or Ray shard actors, with how many of them answer now."""
    import grpc

    from pura.service._proto.pura.v1 import pura_pb2, pura_pb2_grpc
    from pura.service.server import secure_channel

    with secure_channel(server, tls, cert, Limits()) as channel:
        stub = pura_pb2_grpc.PuraAdminStub(channel)  # type: ignore[no-untyped-call]
        try:
            s = stub.Stats(pura_pb2.StatsRequest(collection=collection), timeout=30)
        except grpc.RpcError as exc:
            console.print(f"[red]error:[/red] {exc.code().name}: {exc.details()}")
            raise typer.Exit(code=2) from None
    console.print(f"collection {s.collection}: {s.subjects} subjects, {s.templates} templates "
                  f"({s.pending_templates} awaiting a block), {s.blocks} blocks, "
                  f"{s.identifications} identifications since start")
    state = "ok" if s.scorer_alive == s.scorer_expected else "[yellow]DEGRADED[/yellow]"
    console.print(f"scorer: {s.scorer}, {s.scorer_alive}/{s.scorer_expected} alive ({state}); "
                  f"{s.scorer_description}")


__all__ = ["app"]

if __name__ == "__main__":
    app()
