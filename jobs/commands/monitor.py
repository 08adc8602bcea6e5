"""`photoscore monitor`: a window of the feature, score and quarantine tables against the reference
profile of the model version that scored them - per-feature and score drift (PSI, KS, Wasserstein),
missing values, quarantine share by reason, volume - written as drift.json and report.html.
Exit 0 when quiet (or too little evidence), 3 on an alarm."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("monitor", help="drift of the tables against the model version's reference "
                                              "(exit 3: alarm)", description=__doc__)
    p.add_argument("--model", default=None, metavar="MODEL_URI",
                   help="models:/NAME@ALIAS or models:/NAME/VERSION (default: config mlflow.model_name@mlflow.alias)")
    p.add_argument("--tables", default=None, metavar="ROOT",
                   help="the photos, features, scores and quarantine tables under ROOT (path, file:// or s3://; "
                        "default: config storage.tables)")
    p.add_argument("--since", default=None, metavar="T",
                   help="the window's start: an ISO time (UTC unless it names a zone) or 30m, 2h, 1d ago "
                        "(default: config monitor.window)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where drift.json and report.html go (default: <home>/<monitor.out>/<model>/v<N>/<time>)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings) -> int:
    from jobs.model_args import model_uri
    from jobs.monitor import run_monitor

    result = run_monitor(settings, model_uri(args, settings), tables=args.tables, since=args.since, out=args.out)
    print("\n".join(result.lines))
    return result.exit_code
