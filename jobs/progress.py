"""Progress for long work: a tqdm bar on a terminal, periodic `rows/s, ETA` log lines otherwise."""
from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("photoscore.progress")


class Progress:
    """Counts done items and reports rate and ETA; use as a context manager."""

    def __init__(self, total: int | None, unit: str, desc: str, log_every_s: float = 10.0):
        self.total, self.unit, self.desc = total, unit, desc
        self.done = 0
        self.started = time.monotonic()
        self._last_log = self.started
        self._log_every_s = log_every_s
        self._bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True,
                         smoothing=0.1) if sys.stderr.isatty() else None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._log()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last_log >= self._log_every_s:
            self._log()

    def _log(self) -> None:
        self._last_log = time.monotonic()
        rate = self.rate
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d %s, %.1f %s/s, ETA %.0f s", self.desc, self.done, self.total,
                     self.unit, rate, self.unit, eta)
        else:
            log.info("%s: %d %s, %.1f %s/s", self.desc, self.done, self.unit, rate, self.unit)
