"""Bad inputs and oddities: the files `photoscore corpus --broken` writes next to the photos.

Bad inputs are files the feature extractor must refuse, each with the reason code it must give;
oddities are valid but unusual images (CMYK, 16-bit, palette, animated, EXIF-rotated, ...) that it
must feature. Both are fixed: the same in every corpus.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from models.corpus.encoding import encode_image


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + \
        struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR width/height (and its CRC) without touching the pixel data: the header
    then claims a size the file does not hold, as a decompression bomb does."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG starting with IHDR")
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:8] + _png_chunk(b"IHDR", ihdr) + png[33:]


_HTML_PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>404 Not Found</title></head>
<body><h1>Not Found</h1><p>The requested URL /photos/IMG_0042.jpg was not found on this server.</p>
<hr><address>Apache Server at photos.example.com Port 443</address></body></html>
"""


def write_bad_inputs(directory: str | Path, image: Image.Image | None = None) -> dict[str, str]:
    """Write inputs the feature extractor must refuse; returns {absolute path: reason code}.

    `image` is the photo the truncated files are cut from (a fixed gradient if omitted). The
    limits assumed are conf/photoscore.yaml's: max side 30000 px, max 100 M pixels.
    """
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = _test_pattern(640, 480)
    photo = ImageOps.fit(image.convert("RGB"), (800, 600), Image.Resampling.LANCZOS)
    jpeg = encode_image(photo, "JPEG", 85)
    png = encode_image(photo, "PNG")
    rng = np.random.default_rng(20240531)  # fixed: the bad inputs are the same in every corpus
    random_bytes = rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    # Make sure the random bytes do not by chance start with a known image signature.
    random_bytes = b"\x00" + random_bytes[1:]
    tiny = encode_image(_test_pattern(64, 64), "PNG")
    files = {
        "empty.jpg": (b"", "empty_file"),
        "truncated.jpg": (jpeg[: int(len(jpeg) * 0.4)], "truncated_image"),
        "truncated.png": (png[: int(len(png) * 0.4)], "truncated_image"),
        "random_bytes.jpg": (random_bytes, "not_an_image"),
        "html_page.jpg": (_HTML_PAGE, "not_an_image"),
        # 30000 x 30000 = 900 M pixels: within the side limit, far over the pixel limit.
        "bomb_30000x30000.png": (patch_png_size(tiny, 30000, 30000), "decompression_bomb"),
        # A real, valid 1 x 200000 PNG: few pixels, but a side over 30000.
        "strip_1x200000.png": (encode_image(Image.new("L", (1, 200000), 128), "PNG"),
                               "dimensions_out_of_range"),
    }
    out = {}
    for name, (data, reason) in files.items():
        path = d / name
        path.write_bytes(data)
        out[str(path)] = reason
    return out


def _test_pattern(w: int, h: int) -> Image.Image:
    """A deterministic colourful gradient with detail (for when no photo is at hand)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 127 * np.sin(x / 9.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8))


def corrupt_jpeg_entropy(jpeg: bytes, n_bytes: int = 4, start: float = 0.45) -> bytes:
    """Overwrite a few bytes in the middle of a baseline JPEG's entropy-coded data.

    Avoids 0xFF and the byte after one, so no marker is created or destroyed: libjpeg still finds
    every segment and decodes the rest, with "Corrupt JPEG data" warnings and garbled blocks.
    """
    sos = jpeg.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("no SOS marker: not a JPEG")
    seg_len = struct.unpack(">H", jpeg[sos + 2: sos + 4])[0]
    scan_start = sos + 2 + seg_len
    scan_end = jpeg.rfind(b"\xff\xd9")
    data = bytearray(jpeg)
    pos = scan_start + int((scan_end - scan_start) * start)
    done = 0
    while done < n_bytes and pos < scan_end - 2:
        if data[pos] != 0xFF and data[pos - 1] != 0xFF:
            data[pos] = (data[pos] ^ 0x5A) if (data[pos] ^ 0x5A) != 0xFF else 0x11
            done += 1
        pos += 37  # spread over a few MCUs
    return bytes(data)


def write_oddities(directory: str | Path, image: Image.Image | None = None) -> dict[str, dict]:
    """Write valid but unusual images that the feature extractor must feature.

    Returns {absolute path: {kind, width, height (upright, i.e. after EXIF orientation), mode
    (as Pillow opens it), format, frames, allowed_outcomes, borderline, note}}.
    """
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = _test_pattern(640, 480)
    # Landscape 4:3, never square: the EXIF-rotated file must have a stored size that differs
    # from its upright size.
    photo = ImageOps.fit(image.convert("RGB"), (640, 480), Image.Resampling.LANCZOS)
    w, h = photo.size
    entries: dict[str, dict] = {}

    def add(name: str, data: bytes, kind: str, size: tuple[int, int], note: str = "",
            borderline: bool = False, frames: int = 1) -> None:
        path = d / name
        path.write_bytes(data)
        with Image.open(path) as im:
            mode, fmt = im.mode, im.format
        entries[str(path)] = {
            "kind": kind, "width": int(size[0]), "height": int(size[1]), "mode": mode,
            "format": fmt, "frames": frames, "borderline": borderline, "note": note,
            "allowed_outcomes": ["featured", "truncated_image"] if borderline else ["featured"],
        }

    buf = io.BytesIO()
    photo.convert("CMYK").save(buf, "JPEG", quality=90)
    add("cmyk.jpg", buf.getvalue(), "cmyk_jpeg", (w, h), "Adobe CMYK JPEG (print workflows)")

    gray = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    add("gray16.png", encode_image(Image.fromarray(gray), "PNG"), "gray16_png", (w, h),
        "16-bit grayscale PNG (Pillow mode I;16)")
    # Pillow cannot write 16-bit RGB PNG; OpenCV can (it writes BGR order, hence the flip).
    rgb16 = np.asarray(photo, dtype=np.uint16)[:, :, ::-1] * 257
    ok, enc = cv2.imencode(".png", np.ascontiguousarray(rgb16), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if ok:
        add("rgb16.png", enc.tobytes(), "rgb16_png", (w, h),
            "16-bit per channel RGB PNG (Pillow opens it reduced to 8-bit mode RGB)")

    add("palette.png", encode_image(photo.quantize(64, dither=Image.Dither.NONE), "PNG"),
        "palette_png", (w, h), "PNG with a 64-colour palette (mode P)")

    frames = [photo.quantize(64, dither=Image.Dither.NONE),
              ImageOps.mirror(photo).quantize(64, dither=Image.Dither.NONE),
              ImageOps.invert(photo).quantize(64, dither=Image.Dither.NONE)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    add("animated.gif", buf.getvalue(), "animated_gif", (w, h),
        "3 differing frames; the extractor uses the first", frames=3)

    # Orientation 6 = "rotate 90 degrees clockwise to display": store the upright photo rotated
    # 90 degrees counter-clockwise, so the stored size is (h, w) and the upright size is (w, h).
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    photo.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    add("exif_rotated.jpg", buf.getvalue(), "exif_rotated_jpeg", (w, h),
        f"EXIF orientation 6: stored {h}x{w}, upright {w}x{h}")

    add("gray.jpg", encode_image(photo.convert("L"), "JPEG", 90), "gray_jpeg", (w, h),
        "single-channel (mode L) JPEG")

    rgba = photo.convert("RGBA")
    alpha = np.zeros((h, w), np.uint8)
    alpha[h // 6: h - h // 6, w // 6: w - w // 6] = 255  # opaque centre, transparent frame
    rgba.putalpha(Image.fromarray(alpha))
    add("rgba.png", encode_image(rgba, "PNG"), "rgba_png", (w, h), "RGBA PNG, transparent border")

    add("one_pixel.png", encode_image(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "one_pixel_png", (1, 1), "1x1 PNG: the smallest valid image")

    corrupt = corrupt_jpeg_entropy(encode_image(photo, "JPEG", 90))
    add("corrupt_entropy.jpg", corrupt, "corrupt_entropy_jpeg", (w, h),
        "a few corrupt bytes mid-scan: libjpeg decodes it with 'Corrupt JPEG data' warnings and "
        "some garbled blocks; whether to feature or quarantine it is the extractor's documented "
        "decision", borderline=True)
    return entries
