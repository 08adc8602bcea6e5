"""Quarantine records: what failed, where, at which stage and why (DESIGN.md "Quarantine").

Every stage of every engine reports failures with these records and reason codes, so a photo that
cannot be featured or scored is never lost: inputs = outputs + quarantined.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Iterable, Optional

import pandas as pd

from udfs.schemas import QUARANTINE, frame

STAGES = ("read", "parse", "decode", "features", "score")

REASON_CODES = {
    "unreadable_uri": "the photo's URI or path could not be read (missing, access denied)",
    "uri_not_allowed": "the URI is outside the photo roots (storage.photo_roots) or of a scheme photos "
                       "are never read from; refused before any byte is read",
    "not_a_regular_file": "the path is a directory, device, FIFO or socket, not a regular file",
    "empty_file": "the file has zero bytes",
    "not_an_image": "the bytes are not an image format we can decode",
    "truncated_image": "the image data ends early or is corrupt",
    "decompression_bomb": "the header announces more pixels than the configured limit",
    "dimensions_out_of_range": "width or height is outside the configured limits",
    "unsupported_mode": "the pixel mode cannot be converted to RGB",
    "file_too_large": "the file is larger than the configured byte limit",
    "message_too_large": "the message is larger than kafka.max_message_bytes; dead-lettered unparsed",
    "malformed_message": "the message is not valid JSON of the expected shape",
    "missing_field": "a required message field is missing or empty",
    "non_finite_feature": "a computed feature is NaN or infinite",
    "unknown_model": "the requested model, version or alias does not exist",
    "score_failed": "the scorer raised or returned a non-finite score",
}


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class QuarantineRecord:
    """One input that could not be processed, with a reason code from REASON_CODES.

    Its fields are udfs.schemas.QUARANTINE's, in that order (tests/test_schemas.py checks it)."""

    source_ref: str
    photo_id: Optional[str]
    stage: str
    reason_code: str
    detail: str
    seen_at_ms: int

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown quarantine stage {self.stage!r}; expected one of {STAGES}")
        if self.reason_code not in REASON_CODES:
            raise ValueError(f"unknown reason code {self.reason_code!r}")


def quarantine_frame(records: Iterable[QuarantineRecord]) -> pd.DataFrame:
    """Records as a DataFrame of the QUARANTINE layout (empty frames keep the columns)."""
    return frame(QUARANTINE, [asdict(r) for r in records])
