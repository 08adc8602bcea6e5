"""`photoscore score`: score a features parquet locally (no engine) with a registered model."""
from __future__ import annotations

from pathlib import Path

from jobs.model_args import add_model_arguments, export_format, model_uri


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="score a features parquet locally with a registered model",
        description=__doc__ + " Rows that cannot be scored go to OUT's .quarantine.parquet sibling.")
    add_model_arguments(p)
    p.add_argument("--features", required=True, type=Path, help="features parquet")
    p.add_argument("--out", required=True, type=Path, help="score rows parquet to write")
    p.set_defaults(handler=run)


def quarantine_path(out: Path) -> Path:
    """`scores.parquet` -> `scores.quarantine.parquet`, next to it."""
    return out.with_name(f"{out.stem}.quarantine{out.suffix or '.parquet'}")


def run(args, settings) -> int:
    import pandas as pd

    from jobs.tables import write_parquet_atomic
    from models.registry import resolve_bundle
    from udfs.scoring import score_frame
    from udfs.bundle import read_feature_schema
    from udfs.errors import PhotoscoreError
    from udfs.formats import load_scorer

    fmt = export_format(args, settings)
    name, version, bundle_dir = resolve_bundle(model_uri(args, settings), settings)
    scorer = load_scorer(bundle_dir, fmt, threads=settings.scoring.threads)
    try:
        features = pd.read_parquet(args.features)
    except (OSError, ValueError) as exc:
        raise PhotoscoreError(f"cannot read features parquet {args.features}: {exc}") from None
    result = score_frame(features, scorer, read_feature_schema(bundle_dir), name, version,
                         source_ref=str(args.features), source="batch")
    write_parquet_atomic(result.scores, args.out)
    write_parquet_atomic(result.quarantine, quarantine_path(args.out))
    print(f"model={name}/{version} format={scorer.format} inputs={len(features)} "
          f"scored={len(result.scores)} quarantined={len(result.quarantine)}")
    return 0
