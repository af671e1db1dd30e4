"""Command line: ``python -m bench run --sizes 1000,10000 --out bench/results/``,
``python -m bench enroll --n 200``, ``python -m bench load``,
``python -m bench online-exact [options of python -m bench.online_exact]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.timing import MIN_REPETITIONS


def _ints(text: str) -> list[int]:
    try:
        values = [int(v.replace("_", "")) for v in text.split(",") if v.strip()]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("sizes must be positive integers")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="Pura vs baselines vs FAISS on synthetic galleries")
    r.add_argument("--sizes", type=_ints, default=[1000, 10000])
    r.add_argument("--out", type=Path, default=Path("bench/results"))
    r.add_argument("--repetitions", type=int, default=MIN_REPETITIONS)
    r.add_argument("--preset", default="default", help="parameter preset: default | fast")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--baseline2-templates", type=int, default=1)
    r.add_argument("--baseline3-templates", type=int, default=16)
    r.add_argument("--shards", type=_ints, default=None, help="Ray shard counts, e.g. 1,2,4")
    r.add_argument("--lfw-probes", type=int, default=0, help="real LFW probes for accuracy")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--service-sizes", type=_ints, default=[],
                   help="also through real pura serve A and B (BulkEnroll, Identify over mTLS), "
                        "e.g. 1000,5000")
    r.add_argument("--service-queries", type=int, default=20)
    r.add_argument("--engine-workers", type=int, default=os.cpu_count() or 1,
                   help="processes per server for Paillier work (default: all cores)")
    en = sub.add_parser("enroll", help="BulkEnroll throughput against real pura serve A and B")
    en.add_argument("--n", type=int, default=200, help="templates to enrol in one stream")
    en.add_argument("--out", type=Path, default=Path("bench/results"))
    en.add_argument("--preset", default="default", help="parameter preset: default | fast")
    en.add_argument("--workers", type=int, default=1, help="engine processes per server")
    en.add_argument("--bulk-batch", type=int, default=64, help="A's commit batch")
    en.add_argument("--idle-timeout", type=float, default=3600.0,
                    help="seconds without an acknowledged batch before the stream fails")
    en.add_argument("--stages", type=int, default=16,
                    help="templates in the in-process stage breakdown (0: skip)")
    sub.add_parser("online-exact", add_help=False,
                   help="share-based exact-stage prototype beside today's (bench.online_exact)")
    ld = sub.add_parser("load", help="N concurrent clients against running servers")
    ld.add_argument("--clients", type=int, default=4)
    ld.add_argument("--seconds", type=float, default=30.0)
    ld.add_argument("--people", type=int, default=20)
    ld.add_argument("--out", type=Path, default=Path("bench/results"))
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["online-exact"]:  # its own options: delegate them whole
        from bench.online_exact import main as online_exact

        online_exact(argv[1:])
        return 0
    args = parser().parse_args(argv)
    if args.command == "run":
        if args.repetitions < MIN_REPETITIONS:
            print(f"note: fewer than {MIN_REPETITIONS} repetitions requested", file=sys.stderr)
        from bench.run import run

        result = run(
            args.sizes, args.out, repetitions=args.repetitions, preset=args.preset,
            seed=args.seed, baseline2_templates=args.baseline2_templates,
            baseline3_templates=args.baseline3_templates, shards=args.shards,
            lfw_probes=args.lfw_probes, plots=not args.no_plots,
            engine_workers=args.engine_workers, service_sizes=args.service_sizes,
            service_queries=args.service_queries,
        )
        print(json.dumps({"ratios": result["ratios"], "pura_total_s": {
            n: r["pura"]["stages_median_s"]["total"] for n, r in result["sizes"].items()}},
            indent=2))
        return 0
    if args.command == "enroll":
        from bench.enroll import run_enroll

        summary = run_enroll(args.n, args.out, profile=args.preset, workers=args.workers,
                             bulk_batch=args.bulk_batch, stages=args.stages,
                             idle_s=args.idle_timeout)
        print(json.dumps({k: v for k, v in summary.items() if k != "machine"}, indent=2))
        return 0 if summary["enrolled"] == args.n else 1
    from bench.load import run_load

    summary = run_load(args.clients, args.seconds, args.people, args.out)
    print(json.dumps(summary, indent=2))
    return 0 if summary["wrong_answers"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
