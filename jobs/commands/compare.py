"""`photoscore compare`: a rollout's champion vs its challenger on the same contents - pairs,
mean |delta|, rank correlation, decision flips, PSI, per-arm error rate and (stream) latency -
judged against config `rollout`. Exit 0 when the challenger passes, 3 when it fails."""
from __future__ import annotations

import json
import time

FAILED_EXIT = 3


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help="champion vs challenger of a rollout (exit 3: fails the thresholds)",
                              description=__doc__)
    p.add_argument("--name", default=None, help="registered model (default: config mlflow.model_name)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--tables", default=None, metavar="ROOT",
                        help="the score and quarantine tables under ROOT (path, file:// or s3://)")
    source.add_argument("--stream", action="store_true",
                        help="the served and shadow score topics, read to their end")
    p.add_argument("--since", default=None, metavar="T",
                   help="only what was scored from T on: an ISO time (UTC unless it names a zone) or 30m, 2h, 1d ago")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures as JSON to FILE (-: stdout)")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from jobs.rollout_compare import report, run_compare
    from jobs.table_reader import parse_since

    name = args.name or settings.mlflow.model_name
    since_ms = parse_since(args.since, int(time.time() * 1000)) if args.since else None
    plan, comparison = run_compare(settings, name, tables=args.tables, stream=args.stream, since_ms=since_ms)
    source = "stream" if args.stream else args.tables
    figures = json.dumps(report(plan, comparison, source), indent=2)
    if args.json == "-":
        print(figures)
    else:
        print(f"{name}: champion v{plan.champion} vs challenger v{plan.challenger} ({source})")
        print("\n".join(comparison.lines()))
        if args.json:
            with open(args.json, "w") as fh:
                fh.write(figures + "\n")
    return 0 if comparison.passed else FAILED_EXIT
