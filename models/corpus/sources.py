"""Source photographs: the real photos that ship with installed packages, and their decoding.

The corpus is built from scikit-image's bundled photos and the photographic KDE wallpapers of the
Debian package `plasma-workspace-wallpapers`; nothing is downloaded.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from udfs.errors import PhotoscoreError

log = logging.getLogger(__name__)

WALLPAPER_ROOT = Path("/usr/share/wallpapers")

# scikit-image's bundled *photographs* that load offline. Left out on purpose: `clock` (motion
# blurred by design -- it would be a "clean" blurred photo), `moon` and `hubble_deep_field`
# (mostly black), microscopy/retina images, textures and synthetic images (text, logo, horse...).
SKIMAGE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")

# The photographic wallpapers of plasma-workspace-wallpapers (checked by eye; Autumn, SafeLanding,
# Canopee and most others are illustrations or renders). The flag marks nearly featureless photos
# (sky, calm water at dusk): a blur there changes nothing visible, so they never get a blur label.
WALLPAPER_PHOTOS: dict[str, bool] = {
    "BytheWater": False,
    "ColdRipple": False,
    "ColorfulCups": False,
    "DarkestHour": True,
    "EveningGlow": False,
    "FallenLeaf": False,
    "Grey": False,
    "Kite": True,
    "OneStandsOut": False,
    "Path": False,
    "summer_1am": True,
}

_SIZE_NAME = re.compile(r"^(\d+)x(\d+)\.(jpe?g|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """One source photograph: `name` is what `source_photo` holds in the labels."""

    name: str
    kind: str            # "skimage" or "wallpaper"
    ref: str             # skimage function name, or the wallpaper file path
    flat: bool = False   # nearly featureless: never blurred (the label would be invisible)


def available_sources(wallpaper_root: Path = WALLPAPER_ROOT) -> list[Source]:
    """The source photographs installed on this machine, in a fixed order.

    Raises PhotoscoreError naming the packages to install when none is found.
    """
    sources: list[Source] = []
    try:
        import skimage.data as skdata
    except ImportError:
        skdata = None
    if skdata is not None:
        for name in SKIMAGE_PHOTOS:
            try:
                getattr(skdata, name)  # only the attribute: loading happens once, in SourceCache
            except AttributeError:
                continue
            sources.append(Source(name=name, kind="skimage", ref=name))
    for name, flat in WALLPAPER_PHOTOS.items():
        best = _largest_wallpaper_file(wallpaper_root / name / "contents" / "images")
        if best is not None:
            sources.append(Source(name=name, kind="wallpaper", ref=str(best), flat=flat))
    if not sources:
        raise PhotoscoreError(
            f"no source photographs found: neither scikit-image's bundled photos nor the wallpapers "
            f"under {wallpaper_root}. Install the Debian package plasma-workspace-wallpapers "
            f"(apt-get install plasma-workspace-wallpapers) and/or scikit-image (the project's "
            f"'spark' extra)."
        )
    if not any(s.kind == "wallpaper" for s in sources):
        log.warning("plasma-workspace-wallpapers not found under %s: using scikit-image photos only "
                    "(small, so large variants are strongly upscaled)", wallpaper_root)
    return sources


def _largest_wallpaper_file(images_dir: Path) -> Path | None:
    """The largest landscape rendition (names are WIDTHxHEIGHT.ext)."""
    if not images_dir.is_dir():
        return None
    best, best_px = None, 0
    for path in sorted(images_dir.iterdir()):
        m = _SIZE_NAME.match(path.name)
        if not m:
            continue
        w, h = int(m.group(1)), int(m.group(2))
        if w >= h and w * h > best_px:
            best, best_px = path, w * h
    return best


def load_source(source: Source) -> Image.Image:
    """Decode one source photograph to an RGB or L (grayscale) Pillow image."""
    if source.kind == "skimage":
        import skimage.data as skdata

        arr = np.asarray(getattr(skdata, source.ref)())
        return Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)))
    with Image.open(source.ref) as im:
        im.load()
        return im.convert("L") if im.mode in ("L", "I;16", "I") else im.convert("RGB")


class SourceCache:
    """Decodes each source once per run (decoding a 4 MP wallpaper costs more than a variant)."""

    def __init__(self, sources: Sequence[Source]):
        self.by_name = {s.name: s for s in sources}
        self._images: dict[str, Image.Image] = {}

    def get(self, name: str) -> Image.Image:
        """The decoded image of the source called `name`."""
        if name not in self._images:
            self._images[name] = load_source(self.by_name[name])
        return self._images[name]

