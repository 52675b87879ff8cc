"""A per-epoch progress display for the custom Horovod train loop, printed by rank 0 only.

On a terminal it redraws one line (bar, steps done/total, running loss) at most every
`min_interval_s`; when the stream is not a terminal (horovodrun's prefixed pipes, CI logs, files)
it prints one plain line per `text_fraction` of the epoch, so logs stay short and greppable. The
epoch ends with one line that adds the validation AUC.

    progress = EpochProgress(total_steps=steps_per_epoch, epochs=10, enabled=rank == 0)
    progress.start_epoch(epoch)
    progress.step(steps, loss)                 # after each train step
    progress.end_epoch(loss, val_auc, seconds)
"""
from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def progress_bar(done: int, total: int, width: int = 24) -> str:
    """`[#########...............]`; full when done >= total (the step count is an estimate)."""
    filled = width if total <= 0 else min(width, int(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def step_line(epoch: int, epochs: int, done: int, total: int, loss: float) -> str:
    percent = 100 if total <= 0 else min(100, int(100 * done / total))
    return (f"epoch {epoch}/{epochs} {progress_bar(done, total)} {done}/{total} steps "
            f"{percent:3d}% loss {_number(loss)}")


def epoch_line(epoch: int, epochs: int, steps: int, loss: float, val_auc: float,
               seconds: float) -> str:
    return (f"epoch {epoch}/{epochs} done: {steps} steps in {seconds:.1f}s, loss {_number(loss)}, "
            f"val AUC {_number(val_auc)}")


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


class EpochProgress:
    """Steps of the current epoch against the expected steps per epoch (per rank)."""

    def __init__(self, total_steps: int, epochs: int, enabled: bool = True,
                 stream: TextIO | None = None, is_tty: bool | None = None,
                 min_interval_s: float = 0.2, text_fraction: float = 0.1) -> None:
        self.total = max(0, int(total_steps))
        self.epochs = int(epochs)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)()) if is_tty is None else is_tty
        self.min_interval_s = min_interval_s
        self.text_every = max(1, math.ceil(self.total * text_fraction)) if self.total else 1
        self.epoch = 0
        self._last_draw = 0.0
        self._next_text = self.text_every

    def start_epoch(self, epoch: int) -> None:
        """`epoch` counts from 1."""
        self.epoch = epoch
        self._last_draw = 0.0
        self._next_text = self.text_every

    def step(self, done: int, loss: float) -> None:
        """`done` steps of this epoch so far, `loss` the running mean loss on this rank."""
        if not self.enabled:
            return
        if self.is_tty:
            now = time.monotonic()
            if now - self._last_draw < self.min_interval_s and done < self.total:
                return
            self._last_draw = now
            self._write("\r" + step_line(self.epoch, self.epochs, done, self.total, loss) + "\x1b[K")
        elif done >= self._next_text:
            while self._next_text <= done:
                self._next_text += self.text_every
            self._write(step_line(self.epoch, self.epochs, done, self.total, loss) + "\n")

    def end_epoch(self, steps: int, loss: float, val_auc: float, seconds: float) -> None:
        if not self.enabled:
            return
        prefix = "\r" if self.is_tty else ""
        suffix = "\x1b[K\n" if self.is_tty else "\n"
        self._write(prefix + epoch_line(self.epoch, self.epochs, steps, loss, val_auc, seconds) + suffix)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
