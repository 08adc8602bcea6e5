"""Planning: which photo is what -- source, role, degradations, strengths, size class, format --
decided up front and cheaply (no pixels), so the mix is balanced and reproducible; and the labels
that follow from a plan.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from models.corpus.degradations import DEGRADATION_LABEL, HEAVY_JPEG
from models.corpus.sources import Source
from udfs.errors import PhotoscoreError

LABEL_COLUMNS = ("blurred", "dark", "overexposed", "noisy", "has_text", "low_quality")

# Degradation "families" for planning: blur picks gaussian or motion per photo.
_FAMILIES = ("blur", "dark", "overexposed", "noise", "text", HEAVY_JPEG)
_INCOMPATIBLE = {frozenset({"dark", "overexposed"})}


@dataclass
class PhotoSpec:
    """What photo `index` will be; decided up front so the mix is balanced and reproducible."""

    index: int
    source: str
    role: str = "original"                    # "original", "exact_duplicate", "near_duplicate"
    degradations: tuple[str, ...] = ()        # names from DEGRADATIONS and/or HEAVY_JPEG
    strengths: tuple[float, ...] = ()
    big: bool = False                         # >= 12 MP
    fmt: str = "JPEG"
    duplicate_of: int | None = None
    extra: dict = field(default_factory=dict)


BIG_MEGAPIXELS = 12.0


def plan_corpus(n: int, seed: int, sources: Sequence[Source]) -> list[PhotoSpec]:
    """Decide each photo's source, role, degradations and strengths.

    Mix: ~5 % exact and ~5 % near duplicates; of the rest ~47 % clean, the others degraded (a
    quarter of those with two degradations); degradation families are dealt round-robin so even
    n = 24 covers every label; a few photos are >= 12 MP (n >= 20).
    """
    if n < 1:
        raise PhotoscoreError(f"--n must be at least 1, got {n}")
    rng = np.random.default_rng([seed, 0xC0])
    n_exact = round(0.05 * n) if n >= 10 else 0
    n_near = round(0.05 * n) if n >= 10 else 0
    m = n - n_exact - n_near
    n_clean = round(0.47 * m)
    n_degraded = m - n_clean
    n_double = round(0.25 * n_degraded)

    families: list[tuple[str, ...]] = [()] * n_clean
    order = list(_FAMILIES)
    rng.shuffle(order)
    for i in range(n_degraded - n_double):
        families.append((order[i % len(order)],))
    pairs = [p for p in itertools.combinations(_FAMILIES, 2) if frozenset(p) not in _INCOMPATIBLE]
    for _ in range(n_double):
        families.append(pairs[int(rng.integers(len(pairs)))])
    rng.shuffle(families)  # a list of tuples: shuffles in place, element order is what matters

    names = [s.name for s in sources]
    assigned = [names[i % len(names)] for i in range(m)]
    rng.shuffle(assigned)
    flat = {s.name for s in sources if s.flat}
    # Swap flat sources away from blurred photos (a blurred sky is not visibly blurred).
    for i, fam in enumerate(families):
        if "blur" in fam and assigned[i] in flat:
            for j in rng.permutation(m):
                if assigned[j] not in flat and "blur" not in families[j]:
                    assigned[i], assigned[j] = assigned[j], assigned[i]
                    break

    specs: list[PhotoSpec] = []
    for fam, src in zip(families, assigned):
        degs, strengths = [], []
        for f in fam:
            if f == "blur":
                f = "gaussian_blur" if rng.random() < 0.5 else "motion_blur"
            elif f == "dark":
                f = "underexposure"
            elif f == "overexposed":
                f = "overexposure"
            degs.append(f)
            # A third of degradations are subtle (strength < 0.3) so the task is not trivial.
            strengths.append(float(rng.uniform(0, 0.3)) if rng.random() < 0.33
                             else float(rng.uniform(0.3, 1.0)))
        specs.append(PhotoSpec(index=-1, source=src, degradations=tuple(degs),
                               strengths=tuple(round(s, 4) for s in strengths)))

    # Large photos: from the wallpapers (the largest sources), without noise (37 M random draws per
    # photo would dominate the run time). ~1.5 % of photos, at least one when n >= 20.
    n_big = max(1, round(0.015 * n)) if n >= 20 else 0
    wallpapers = {s.name for s in sources if s.kind == "wallpaper"} or set(names)
    candidates = [i for i, s in enumerate(specs)
                  if s.source in wallpapers and "noise" not in s.degradations]
    for k, i in enumerate(rng.permutation(candidates)[:n_big]):
        specs[i].big = True
        # At least one baseline and one progressive large JPEG.
        specs[i].extra["progressive"] = bool(k % 2)

    # A few PNGs (~6 %), never for heavy JPEG or large photos (a 12 MP PNG encode is slow).
    for s in specs:
        if not s.big and HEAVY_JPEG not in s.degradations and rng.random() < 0.06:
            s.fmt = "PNG"

    # Duplicates go after their original, at random positions.
    for role, count in (("exact_duplicate", n_exact), ("near_duplicate", n_near)):
        for _ in range(count):
            pos = int(rng.integers(1, len(specs) + 1))
            originals = [j for j in range(pos) if specs[j].role == "original" and not specs[j].big]
            if not originals:
                pos, originals = len(specs), [j for j, s in enumerate(specs)
                                              if s.role == "original" and not s.big]
            orig = specs[originals[int(rng.integers(len(originals)))]]
            dup = PhotoSpec(index=-1, source=orig.source, role=role,
                            degradations=orig.degradations, strengths=orig.strengths,
                            fmt=orig.fmt if role == "exact_duplicate" else "JPEG")
            dup.extra["original"] = orig  # resolved to an index below
            specs.insert(pos, dup)
    for i, s in enumerate(specs):
        s.index = i
    for s in specs:
        if "original" in s.extra:
            s.duplicate_of = s.extra.pop("original").index
    return specs



def labels_for(degradations: Sequence[str]) -> dict[str, bool]:
    """The boolean labels of a photo carrying `degradations`: LABEL_COLUMNS plus
    `heavy_compression`; low_quality is set by any degradation."""
    labels = {c: False for c in (*LABEL_COLUMNS, "heavy_compression")}
    for d in degradations:
        labels[DEGRADATION_LABEL[d]] = True
    labels["low_quality"] = bool(degradations)
    return labels
