"""Quality of the scores on photos the corpus never saw, every feature version side by side.

Trains the default model (xgboost, 300 trees of depth 8) on `photoscore corpus --n N` built
without the held-out sources, then scores held-out photographs (two wallpapers removed from the
corpus's sources, and photos shipped with scikit-learn and matplotlib) cropped and resized to
0.3-2.5 MP and degraded by an independent implementation (tests/_independent_degrade.py: scipy,
scikit-image, Pillow, OpenCV's Hershey fonts). Prints, per degradation kind, the AUC of the
low-quality score for those photos against the clean crops, for each feature version on the same
photos and the same corpus.

The corpus seed decides which crops, strengths and looks the training photos get and moves the
figures by about +-0.04, more than most changes one would test: every seed of `--seeds` is trained
and scored, and the table gives each seed's figures and their mean. The last line gives the newest
version's means: `bench: name=quality feature_version=... seeds=... auc=... auc_blur=... auc_motion=...
auc_noise=... auc_overexposed=... auc_jpeg=... auc_dark=... auc_text=...`. The issue's goal:
auc >= 0.95, every kind >= 0.90.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the independent generator

import _independent_degrade as independent  # noqa: E402
from udfs.features import FEATURE_VERSION, FEATURE_VERSIONS  # noqa: E402

COLUMNS = (*independent.KINDS, "all")


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def _aucs(report: dict) -> dict[str, float]:
    """AUC per kind and overall ("all") of one `models.evaluate.evaluate` report (NaN when absent)."""
    row = {k: float(report["per_kind"].get(k, {}).get("auc", math.nan)) for k in independent.KINDS}
    row["all"] = float(report["overall"]["auc"])
    return row


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="training corpus size (default 600)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="corpus seeds, each trained and scored (default 0 1 2)")
    parser.add_argument("--versions", type=int, nargs="+", default=list(FEATURE_VERSIONS),
                        help=f"feature versions to compare (default {list(FEATURE_VERSIONS)})")
    parser.add_argument("--clean", type=int, default=10, help="clean crops per held-out photo (default 10)")
    parser.add_argument("--per-kind", type=int, default=5, help="crops per kind per held-out photo (default 5)")
    args = parser.parse_args()

    rows: dict[tuple[int, int], dict[str, float]] = {}  # (version, seed) -> AUCs
    with tempfile.TemporaryDirectory(prefix="photoscore-quality-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        held_out = independent.build_held_out_set(work / "held-out", args.clean, args.per_kind)
        sources = sorted({f.rsplit("_", 2)[0] for f in held_out.labels["file"]})
        positives = int(held_out.labels["low_quality"].sum())
        print(f"held-out: {len(held_out.labels)} photos ({positives} degraded) from {len(sources)} photos "
              f"never in the corpus ({', '.join(sources)}); {time.perf_counter() - start:.0f} s")
        for seed in args.seeds:
            for version in args.versions:
                start = time.perf_counter()
                report = independent.measure_quality(work / f"seed-{seed}", held_out, args.n, version, seed)
                rows[version, seed] = _aucs(report)
                print(f"feature version {version}, corpus n={args.n} seed {seed}: trained and scored in "
                      f"{time.perf_counter() - start:.0f} s")

    print(f"{'version':<8} {'seed':>5}" + "".join(f" {c:>11}" for c in COLUMNS))
    means = {}
    for version in args.versions:
        for seed in args.seeds:
            row = rows[version, seed]
            print(f"{'v' + str(version):<8} {seed:>5}" + "".join(f" {_fmt(row[c]):>11}" for c in COLUMNS))
        means[version] = {c: _mean([rows[version, seed][c] for seed in args.seeds]) for c in COLUMNS}
        print(f"{'v' + str(version):<8} {'mean':>5}" + "".join(f" {_fmt(means[version][c]):>11}" for c in COLUMNS))
    last = FEATURE_VERSION if FEATURE_VERSION in means else args.versions[-1]
    figures = " ".join(f"auc_{k}={_fmt(means[last][k])}" for k in independent.KINDS)
    print(f"bench: name=quality feature_version={last} seeds={','.join(map(str, args.seeds))} "
          f"auc={_fmt(means[last]['all'])} {figures}")


if __name__ == "__main__":
    main()
