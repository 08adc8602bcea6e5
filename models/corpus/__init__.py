"""The labelled photo corpus: the training and test data of the whole project.

`build_corpus(out_dir, n, seed)` turns a handful of real photographs that ship with installed
packages (scikit-image's bundled photos, the photographic KDE wallpapers of the Debian package
`plasma-workspace-wallpapers`) into `n` photos with known labels:

- clean variants (crops, sizes, JPEG qualities, baseline/progressive, a few PNG) -- about 45 %;
- degraded variants: gaussian and motion blur, under- and over-exposure, sensor-like noise,
  heavy JPEG compression (quality 5-15) and spam-like overlaid text (Latin and Cyrillic), each with
  a random strength (some subtle), about a quarter of them combining two degradations; sizes of
  blur and noise grain are fractions of the photo's longest side and every parameter is drawn from
  a range (`degradations.PARAMETER_RANGES`), so a degradation looks the same at every size;
- exact duplicates (byte-identical copies under another name) and near-duplicates (the written
  photo decoded and re-encoded at another quality and/or resized by a few per cent);
- sizes from ~0.1 MP to >= 12 MP, most 0.3-2.5 MP (a few large photos when n >= 20), from crops
  of 15-100 % of a source, so each large source gives many different views.

Output layout::

    DIR/photos/pNNNNN.jpg|png      the photos (names carry no label information)
    DIR/labels.parquet             one row per photo, see LABEL_COLUMNS and `build_corpus`
    DIR/broken/, DIR/broken.json   (--broken) bad inputs: {absolute path: expected reason code}
    DIR/oddities/, DIR/oddities.json  (--broken) valid unusual images that must be featured:
                                   {absolute path: {kind, width, height, mode, format, frames,
                                    allowed_outcomes, borderline, note}}

Reproducibility: every random choice comes from numpy Generators seeded with (seed, photo index),
encoders run with fixed settings and nothing depends on time, so the same `n` and `seed` give
byte-identical photos and labels (for the same installed sources, Pillow and libjpeg -- all pinned).

The package, by concern: `sources` (the source photographs), `degradations` (the registry of
degradation kinds and the labels they set), `planning` (which photo is what, and its labels),
`render` (one planned photo to pixels), `encoding` (pixels to bytes), `output` (`build_corpus`,
`summarize`), `bad_inputs` (the `--broken` files). The names re-exported here are the ones the
rest of the project uses.
"""
from __future__ import annotations

from models.corpus.bad_inputs import write_bad_inputs, write_oddities
from models.corpus.degradations import DEGRADATIONS
from models.corpus.output import build_corpus, summarize
from models.corpus.planning import LABEL_COLUMNS, plan_corpus
from models.corpus.sources import Source, available_sources, load_source

__all__ = [
    "DEGRADATIONS", "LABEL_COLUMNS", "Source", "available_sources", "build_corpus", "load_source",
    "plan_corpus", "summarize", "write_bad_inputs", "write_oddities",
]
