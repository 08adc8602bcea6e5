"""Output: build a corpus folder -- the photos, `labels.parquet` and, on request, the bad inputs and
oddities -- from a plan, and summarize it in one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm import tqdm

from models.corpus.bad_inputs import write_bad_inputs, write_oddities
from models.corpus.degradations import font_paths
from models.corpus.planning import BIG_MEGAPIXELS, LABEL_COLUMNS, labels_for, plan_corpus
from models.corpus.render import render_near_duplicate, render_original
from models.corpus.sources import Source, SourceCache, available_sources
from udfs.errors import PhotoscoreError

_OWNED = ("photos", "broken", "oddities", "labels.parquet", "broken.json", "oddities.json")


def _prepare_out_dir(out_dir: Path) -> None:
    """Reuse a previous corpus directory (stale photos from a bigger n must not linger), but never
    delete anything from a directory that is not a corpus."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise PhotoscoreError(f"{out_dir} exists and is not a directory; choose another --out")
        entries = list(out_dir.iterdir())
        if entries and not (out_dir / "labels.parquet").exists():
            raise PhotoscoreError(
                f"{out_dir} is not empty and holds no corpus (no labels.parquet); choose an empty "
                f"or new --out directory so nothing of yours is overwritten"
            )
        for name in _OWNED:
            p = out_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out_dir / "photos").mkdir(parents=True, exist_ok=True)


def labels_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as the labels table with fixed column order and dtypes."""
    columns = ["photo_id", *LABEL_COLUMNS, "source_photo", "duplicate_of", "variant",
               "heavy_compression", "format", "jpeg_quality", "progressive", "width", "height",
               "megapixels", "file_bytes", "params"]
    frame = pd.DataFrame(rows, columns=columns)
    dtypes = {c: "bool" for c in (*LABEL_COLUMNS, "heavy_compression", "progressive")}
    dtypes.update({"photo_id": "string", "source_photo": "string", "duplicate_of": "string",
                   "variant": "string", "format": "string", "params": "string",
                   "jpeg_quality": "Int64", "width": "int64", "height": "int64",
                   "megapixels": "float64", "file_bytes": "int64"})
    return frame.astype(dtypes)


def build_corpus(out_dir: str | Path, n: int, seed: int = 0, broken: bool = False,
                 progress: bool = True, sources: Sequence[Source] | None = None) -> pd.DataFrame:
    """Write `n` labelled photos under `out_dir/photos/` and `out_dir/labels.parquet`.

    Returns the labels frame: `photo_id` (absolute path as written), the boolean labels
    `blurred, dark, overexposed, noisy, has_text, low_quality` (low_quality = any degradation,
    heavy compression included), `source_photo`, `duplicate_of` (photo_id of the original for exact
    and near duplicates, else null), and descriptive columns `variant` ("clean", degradations joined
    by "+", or the duplicate role), `heavy_compression`, `format`, `jpeg_quality`, `progressive`,
    `width`, `height`, `megapixels`, `file_bytes`, `params` (JSON of the parameters used).
    With `broken=True` also writes the bad inputs and oddities (see `write_bad_inputs`,
    `write_oddities`).
    """
    out_dir = Path(out_dir).resolve()
    sources = list(sources) if sources is not None else available_sources()
    specs = plan_corpus(n, seed, sources)
    fonts = font_paths() if any("text" in s.degradations for s in specs) else None
    _prepare_out_dir(out_dir)
    cache = SourceCache(sources)
    photos_dir = out_dir / "photos"
    written: dict[int, tuple[Path, dict]] = {}
    rows: list[dict] = []
    for spec in tqdm(specs, desc="corpus", unit="photo", disable=not progress):
        path = photos_dir / f"p{spec.index:05d}.{'png' if spec.fmt == 'PNG' else 'jpg'}"
        if spec.role == "exact_duplicate":
            orig_path, orig_row = written[spec.duplicate_of]
            shutil.copyfile(orig_path, path)
            data, w, h = None, orig_row["width"], orig_row["height"]
            params = {}
            fmt, quality, progressive = orig_row["format"], orig_row["jpeg_quality"], \
                orig_row["progressive"]
        elif spec.role == "near_duplicate":
            orig_path, orig_row = written[spec.duplicate_of]
            data, img, params = render_near_duplicate(orig_path.read_bytes(),
                                                      orig_row["jpeg_quality"], seed, spec.index)
            w, h = img.size
            fmt, quality, progressive = "JPEG", params["quality"], params["progressive"]
        else:
            data, img, params = render_original(spec, cache.get(spec.source), seed, fonts)
            w, h = img.size
            fmt, quality, progressive = spec.fmt, params["quality"], params["progressive"]
        if data is not None:
            path.write_bytes(data)
        row = {
            "photo_id": str(path),
            **labels_for(spec.degradations),
            "source_photo": spec.source,
            "duplicate_of": (str(written[spec.duplicate_of][0])
                             if spec.duplicate_of is not None else None),
            "variant": spec.role if spec.role != "original"
            else ("+".join(spec.degradations) or "clean"),
            "format": fmt,
            "jpeg_quality": quality,
            "progressive": bool(progressive),
            "width": int(w),
            "height": int(h),
            "megapixels": round(w * h / 1e6, 4),
            "file_bytes": path.stat().st_size,
            "params": json.dumps({"strengths": dict(zip(spec.degradations, spec.strengths)),
                                  **params}, sort_keys=True, ensure_ascii=False),
        }
        written[spec.index] = (path, row)
        rows.append(row)
    frame = labels_frame(rows)
    frame.to_parquet(out_dir / "labels.parquet", index=False)
    if broken:
        first = cache.get(sources[0].name)
        bad = write_bad_inputs(out_dir / "broken", first)
        odd = write_oddities(out_dir / "oddities", first)
        _write_json(out_dir / "broken.json", bad)
        _write_json(out_dir / "oddities.json", odd)
        # For the summary line. Set after to_parquet on purpose: pandas writes attrs into the
        # parquet metadata, and the file must not depend on the output path.
        frame.attrs.update(broken=len(bad), oddities=len(odd))
    frame.attrs["out_dir"] = str(out_dir)
    return frame


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")


def summarize(labels: pd.DataFrame) -> str:
    """One line: photo count, clean count, counts per label, duplicates, large photos, and the
    bad-input/oddity counts when `build_corpus` wrote them (taken from `labels.attrs`)."""
    clean = int((~labels["low_quality"]).sum())
    parts = [f"{len(labels)} photos", f"clean {clean}"]
    parts += [f"{c} {int(labels[c].sum())}" for c in LABEL_COLUMNS]
    parts.append(f"heavy_compression {int(labels['heavy_compression'].sum())}")
    parts.append(f"exact_dup {int((labels['variant'] == 'exact_duplicate').sum())}")
    parts.append(f"near_dup {int((labels['variant'] == 'near_duplicate').sum())}")
    parts.append(f">=12MP {int((labels['megapixels'] >= BIG_MEGAPIXELS).sum())}")
    parts.append(f"png {int((labels['format'] == 'PNG').sum())}")
    for key in ("broken", "oddities"):
        if key in labels.attrs:
            parts.append(f"{key} {labels.attrs[key]}")
    where = f" {labels.attrs['out_dir']}" if "out_dir" in labels.attrs else ""
    return f"corpus{where}: " + ", ".join(parts)

