"""`photoscore corpus`: build the reproducible labelled photo corpus (see models/corpus/)."""
from __future__ import annotations

import argparse
import time

from models.corpus import build_corpus, summarize


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "corpus",
        help="build a reproducible labelled photo corpus from installed photos",
        description=(
            "Write N photos (clean and degraded variants of the photographs shipped with "
            "scikit-image and plasma-workspace-wallpapers) to OUT/photos/ and their labels to "
            "OUT/labels.parquet. Same --n and --seed give byte-identical output."
        ),
    )
    parser.add_argument("--out", required=True,
                        help="output directory (new, empty, or a previous corpus to replace)")
    parser.add_argument("--n", type=int, required=True, help="number of photos")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--broken", action="store_true",
        help="also write OUT/broken/ + broken.json (inputs to refuse, with the expected reason "
             "code) and OUT/oddities/ + oddities.json (valid unusual images to feature)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings) -> int:
    """Build the corpus and print the one-line summary (counts per label) on stdout."""
    start = time.perf_counter()
    labels = build_corpus(args.out, args.n, args.seed, broken=args.broken,
                          progress=not args.no_progress)
    print(f"{summarize(labels)} ({time.perf_counter() - start:.1f} s)")
    return 0
