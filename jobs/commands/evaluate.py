"""`photoscore evaluate`: how well a registered model separates a labelled photo set of your own."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from jobs.model_args import add_model_arguments, export_format, model_uri


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="AUC, PR-AUC and per-kind AUC of a model on a labelled photo folder",
        description=__doc__ + " LABELS is a CSV with columns file (relative to PHOTOS), low_quality "
                    "(0/1) and optionally kind; each kind's AUC compares its photos with the clean "
                    "ones. Features are computed at the model's own feature version; photos that "
                    "cannot be featured or scored are counted and listed with their reason code.")
    add_model_arguments(p)
    p.add_argument("--photos", required=True, type=Path, metavar="DIR", help="folder the files are in")
    p.add_argument("--labels", required=True, type=Path, metavar="CSV", help="labels CSV")
    p.add_argument("--out", type=Path, default=None, metavar="FILE.json", help="write the report as JSON")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="feature extraction processes (default: one per core)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings) -> int:
    from jobs.local_features import extract_all
    from models.evaluate import evaluate, format_table, read_labels, report_json
    from models.registry import resolve_bundle
    from udfs.bundle import read_feature_schema
    from udfs.features import FeatureRow, feature_frame
    from udfs.formats import load_scorer
    from udfs.photo_io import photo_reader
    from udfs.scoring import score_frame

    labels = read_labels(args.labels)
    uri = model_uri(args, settings)
    name, version, bundle_dir = resolve_bundle(uri, settings)
    schema = read_feature_schema(bundle_dir)
    scorer = load_scorer(bundle_dir, export_format(args, settings), threads=settings.scoring.threads)
    photos = args.photos.expanduser().absolute()
    file_of = {str(photos / f): str(f) for f in labels["file"]}
    featured, unscored = [], {}
    # The labelled folder is the operator's choice: readable for this run besides storage.photo_roots.
    reader = photo_reader(settings, [str(photos)])
    for result in extract_all(list(file_of), args.workers, settings.features.limits(), reader,
                              schema.feature_version):
        if isinstance(result, FeatureRow):
            featured.append(result)
        else:
            unscored[file_of[result.source_ref]] = f"{result.stage}/{result.reason_code}"
    scored = score_frame(feature_frame(featured, schema.feature_version), scorer, schema, name, version,
                         source_ref=str(args.labels), source="batch")
    for record in scored.quarantine.itertuples():
        unscored[file_of[record.photo_id]] = f"{record.stage}/{record.reason_code}"
    scores = scored.scores.assign(file=scored.scores["photo_id"].map(file_of))[["file", "score"]]
    report = evaluate(scores, labels, unscored)
    report["model"] = {"uri": uri, "name": name, "version": version, "export_format": scorer.format,
                       "feature_version": schema.feature_version}
    print(f"model={name}/{version} format={scorer.format} feature_version={schema.feature_version}")
    print(format_table(report))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report_json(report), encoding="utf-8")
        print(f"report written to {args.out}")
    return 0
