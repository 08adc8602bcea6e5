"""The monitoring part of `make demo`: `photoscore monitor` over the demo tables (the corpus the
champion was trained on: quiet), then over a batch of the same photos darkened by a fixed gamma,
backfilled by Spark into tables of its own (an alarm naming mean_luma)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from jobs.cli import main as photoscore
from jobs.demo_spark import submit_job
from udfs.errors import PhotoscoreError
from udfs.settings import Settings

DARKENING_GAMMA = 2.2   # out = in ** gamma on [0, 1]: mid-tones darken, black and white stay
DARKENED_PHOTOS = 120


def gamma_darkened(path: Path | str, gamma: float = DARKENING_GAMMA) -> bytes:
    """The photo at `path` with every channel mapped through v -> v ** gamma, as a JPEG."""
    lut = [round(255 * (v / 255) ** gamma) for v in range(256)]
    with Image.open(path) as img:
        out = io.BytesIO()
        img.convert("RGB").point(lut * 3).save(out, "JPEG", quality=92)
    return out.getvalue()


def _monitor(argv: list[str]) -> int:
    print(f"$ photoscore {' '.join(argv)}", flush=True)
    return photoscore(argv)


def run_monitor_demo(settings: Settings, corpus_dir: Path, tables: Path, workdir: Path, model_uri: str) -> None:
    """Monitor `tables` (expected quiet), then a darkened batch (expected to alarm); raise if either
    verdict is not the expected one."""
    code = _monitor(["monitor", "--model", model_uri, "--tables", str(tables), "--since", "1d"])
    if code != 0:
        raise PhotoscoreError(f"the demo tables alarmed (exit {code}): the report above says why")

    darkened, dark_tables = workdir / "darkened", workdir / "tables-darkened"
    darkened.mkdir(parents=True, exist_ok=True)
    for photo in sorted((corpus_dir / "photos").glob("*.jpg"))[:DARKENED_PHOTOS]:
        (darkened / photo.name).write_bytes(gamma_darkened(photo))
    print(f"\n{DARKENED_PHOTOS} corpus photos darkened by gamma {DARKENING_GAMMA} into {darkened}; "
          "backfilled into tables of their own:", flush=True)
    # The batch lives outside the configured photo roots: add it as an operator would, by the
    # storage.photo_roots variable, for the spark-submit jobs only.
    roots = {"PHOTOSCORE_STORAGE_PHOTO_ROOTS": json.dumps([*map(str, settings.storage.photo_roots), str(darkened)])}
    submit_job(settings, "backfill_features.py", ["--input", str(darkened), "--tables", str(dark_tables)], roots)
    submit_job(settings, "backfill_scores.py", ["--model", model_uri, "--format", settings.scoring.format,
                                                "--tables", str(dark_tables)], roots)
    code = _monitor(["monitor", "--model", model_uri, "--tables", str(dark_tables), "--since", "1d"])
    if code != 3:
        raise PhotoscoreError(f"the darkened batch did not alarm (exit {code}): the monitor missed a drift")
    print("the darkened batch alarms as it should (exit 3); open the report above to see the shift", flush=True)
