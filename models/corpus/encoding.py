"""Encoding: pixels to file bytes with fixed settings, so the same image always gives the same
bytes (no optimizer randomness, no timestamps)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

_CAMERAS = (("Canon", "Canon EOS 80D"), ("NIKON CORPORATION", "NIKON D750"), ("Apple", "iPhone 12"),
            ("samsung", "SM-G991B"), ("FUJIFILM", "X-T3"))


def exif_bytes(rng: np.random.Generator) -> bytes:
    """Camera EXIF (make, model, orientation 1) for half the photos, else empty.

    Drawn independently of the labels, so `has_exif` varies without leaking a label. No date
    tags: the bytes must not depend on when the corpus was built.
    """
    if rng.random() >= 0.5:
        return b""
    make, model = _CAMERAS[int(rng.integers(len(_CAMERAS)))]
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif[0x0112] = 1
    return exif.tobytes()


def encode_jpeg(img: Image.Image, quality: int, progressive: bool, subsampling: int,
                exif: bytes) -> tuple[bytes, bool]:
    """A JPEG and whether it is progressive. Pillow sizes a progressive encode's output buffer at
    one byte per pixel below quality 95, which a grainy 4:4:4 photo at quality 90-94 can exceed
    ("broken data stream"): that photo is written baseline instead (rare, and still deterministic)."""
    try:
        return encode_image(img, "JPEG", quality, progressive, subsampling, exif), progressive
    except OSError:
        if not progressive:
            raise
        return encode_image(img, "JPEG", quality, False, subsampling, exif), False


def encode_image(img: Image.Image, fmt: str, quality: int | None = None, progressive: bool = False,
                 subsampling: int = 2, exif: bytes = b"") -> bytes:
    """Encode with fixed settings (no optimizer randomness, no timestamps): same input, same bytes."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        kwargs = dict(quality=int(quality), progressive=bool(progressive), optimize=False,
                      subsampling=subsampling if img.mode != "L" else 0)
        if exif:
            kwargs["exif"] = exif
        img.save(buf, "JPEG", **kwargs)
    elif fmt == "PNG":
        img.save(buf, "PNG", compress_level=6)
    else:
        raise ValueError(f"unsupported corpus format {fmt!r}")
    return buf.getvalue()


