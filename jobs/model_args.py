"""The `--model` and `--format` flags every scoring command takes, and what they resolve to.

`photoscore score`, `photoscore backfill scores` (and its spark-submit job), `photoscore stream start`
and the demo all name the model the same way: `models:/NAME@ALIAS` or `models:/NAME/VERSION`,
defaulting to `mlflow.model_name`@`mlflow.alias`; and the export that scores, defaulting to
`scoring.format`.
"""
from __future__ import annotations

import argparse

from udfs.errors import PhotoscoreError
from udfs.settings import Settings


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--model` and `--format` (dest `export_format`) to a scoring command's parser."""
    from udfs.formats import formats

    parser.add_argument("--model", default=None, metavar="MODEL_URI",
                        help="models:/NAME@ALIAS or models:/NAME/VERSION "
                             "(default: config mlflow.model_name@mlflow.alias)")
    parser.add_argument("--format", dest="export_format", default=None, metavar="FORMAT",
                        help=f"the export that scores: {', '.join(formats())}; `photoscore models --parity` "
                             "lists a version's (default: config scoring.format)")


def model_uri(args: argparse.Namespace, settings: Settings) -> str:
    """The model the command scores with: `--model`, else the configured alias."""
    return args.model or f"models:/{settings.mlflow.model_name}@{settings.mlflow.alias}"


def export_format(args: argparse.Namespace, settings: Settings) -> str:
    """The export the command scores with: `--format`, else `scoring.format`."""
    return args.export_format or settings.scoring.format


def with_model_arguments(args: argparse.Namespace, settings: Settings) -> Settings:
    """`settings` with `--model` (an alias URI: a job that follows the registry needs an alias)
    and `--format` applied, for jobs that take their model from settings (the stream)."""
    from models.registry import parse_model_uri

    updated = settings.updated(scoring={"format": export_format(args, settings)})
    if args.model:
        name, version, alias = parse_model_uri(args.model)
        if alias is None:
            raise PhotoscoreError(f"--model {args.model}: the stream follows an alias and swaps to each new "
                                  f"version it points at; use models:/{name}@ALIAS")
        updated = updated.updated(mlflow={"model_name": name, "alias": alias})
    return updated
