"""`photoscore train`: train a model, build its bundle, run the parity gate, register a version."""
from __future__ import annotations

import math

from udfs.bundle import MODEL_TYPES


def register(subparsers) -> None:
    from models.trainers import DEFAULT_DEPTH, DEFAULT_TREES

    p = subparsers.add_parser("train", help="train a model and register a gated MLflow version",
                              description=__doc__)
    p.add_argument("--features", required=True, help="features parquet (photoscore features)")
    p.add_argument("--labels", required=True, help="labels parquet (photoscore corpus)")
    p.add_argument("--target", default="low_quality", help="0/1 label column (default low_quality)")
    p.add_argument("--model", required=True, choices=MODEL_TYPES, help="model type")
    p.add_argument("--name", default=None, help="registered model name (default: config mlflow.model_name)")
    p.add_argument("--trees", type=int, default=DEFAULT_TREES, help=f"trees (default {DEFAULT_TREES})")
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help=f"tree depth (default {DEFAULT_DEPTH})")
    p.add_argument("--threads", type=int, default=None, help="training threads (default min(4, cores))")
    p.add_argument("--feature-version", type=int, default=None, metavar="N",
                   help="feature version to train on (default: the one the features file holds); "
                        "the bundle records it and scores only features of it")
    p.set_defaults(handler=run)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def run(args, settings) -> int:
    from models.parity import describe_failures
    from models.train import train_and_register
    from models.trainers import TrainParams

    params = TrainParams(trees=args.trees, depth=args.depth)
    if args.threads:
        params = TrainParams(trees=args.trees, depth=args.depth, threads=args.threads)
    name = args.name or settings.mlflow.model_name
    result = train_and_register(args.features, args.labels, args.target, args.model, name, settings, params,
                                feature_version=args.feature_version)
    built = result.built
    test = built.metrics.get("test", {})
    print(f"{args.model}: {built.facts['trees']} trees on feature version {result.feature_version}; test rows={test.get('rows', 0)} "
          f"auc={_fmt(test.get('auc'))} pr_auc={_fmt(test.get('pr_auc'))} "
          f"brier={_fmt(test.get('brier'))} ece={_fmt(test.get('ece'))}")
    for row in test.get("reliability", []):
        if row["count"]:
            print(f"  reliability {row['bin']}: n={row['count']} predicted={row['mean_predicted']:.3f} "
                  f"observed={row['observed_rate']:.3f}")
    for fmt, cell in sorted(built.parity["exports"].items()):
        detail = (f"max|d|={cell['max_abs_diff']:.2e} tol={cell['tolerance']:.0e}"
                  if "max_abs_diff" in cell else cell.get("reason", ""))
        print(f"  parity {fmt}: {cell['status']} {detail}")
    print(f"registered {result.name} version {result.version} (parity {built.parity['verdict']})")
    if not built.passed:
        for line in describe_failures(built.parity):
            print(f"parity gate FAILED: {line}")
        print(f"version {result.version} is tagged parity=failed and cannot be promoted")
        return 3
    return 0
