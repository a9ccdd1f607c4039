"""Progress of long steps that a person can follow on a terminal and in a log file alike.

On a terminal :class:`Progress` draws a live rich bar. When stdout is not a terminal (CI, ``| tee``,
a batch job) it prints plain timestamped lines instead: one when the step's description changes (at most one a
``min_gap`` seconds) and otherwise one every ``interval`` seconds while it runs (also during a step that reports nothing,
such as a Verilator build), so a log shows where a run is without flooding.

The API reports progress through a plain callable ``progress(text)`` (see :func:`reporter`), so
scripts can pass ``print``, a logger or nothing.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from rich.console import Console

__all__ = ["Progress", "ProgressFn", "reporter"]

ProgressFn = Callable[[str], None]


class Progress:
    """``with Progress(console, "demo", total=5) as p: p.update("stbif: build"); p.advance()``."""

    def __init__(self, console: Console, title: str, total: int | None = None, *, interval: float = 10.0,
                 min_gap: float = 1.0, live: bool | None = None):
        self.console, self.title, self.total = console, title, total
        self.interval, self.min_gap = interval, min_gap
        self.live = console.is_terminal if live is None else live
        self.done, self.text, self._printed, self._last = 0, "", None, -1e9
        self._t0 = time.monotonic()
        self._bar = self._task = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)

    def __enter__(self):
        if self.live:
            from rich.progress import Progress as RichProgress
            self._bar = RichProgress(console=self.console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total)
        else:
            self._beat.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._bar is not None:
            self._bar.stop()
        elif exc[0] is None:
            with self._lock:
                self._line(f"done in {time.monotonic() - self._t0:.0f} s")

    def _heartbeat(self):
        # a change held back by min_gap is printed late; a long step that reports nothing (a Verilator
        # build, place-and-route) still shows in the log every interval
        while not self._stop.wait(min(self.min_gap, self.interval)):
            with self._lock:
                since = time.monotonic() - self._last
                if self.text != self._printed and since >= self.min_gap:
                    self._line(self.text)
                elif since >= self.interval:
                    self._line(self.text, " (still running)")

    def _line(self, text: str, note: str = ""):
        count = f" {self.done}/{self.total}" if self.total else ""
        self.console.print(f"[{time.monotonic() - self._t0:6.0f} s] {self.title}{count}: {text}{note}",
                           highlight=False, soft_wrap=True, markup=False)
        self._printed, self._last = text, time.monotonic()

    def update(self, text: str | None = None, *, advance: int = 0):
        """Set the current step's description and/or advance the count."""
        self.done += advance
        if text is not None:
            self.text = text
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, description=f"{self.title}: {self.text}")
        else:
            with self._lock:
                if self.text != self._printed and time.monotonic() - self._last >= self.min_gap:
                    self._line(self.text)

    def advance(self, n: int = 1):
        self.update(advance=n)

    def __call__(self, text: str):
        """A :data:`ProgressFn`: report ``text`` as the current sub-step."""
        self.update(text)


def reporter(progress: ProgressFn | None) -> ProgressFn:
    """``progress`` or a function that ignores its argument."""
    return progress if progress is not None else (lambda text: None)
