"""A one-line progress bar for the CLI (bench rounds, bytes of a span file)."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    """Redrawn only when the percentage changes; silent when ``out`` is None."""

    def __init__(self, total: int, out: TextIO | None, label: str = "  ",
                 unit: str = "", scale: int = 1) -> None:  # fmt: skip
        self.total, self.done, self.out = max(total, 1), 0, out
        self.label, self.unit, self.scale = label, unit, scale
        self._shown = -1

    def step(self) -> None:
        self.update(self.done + 1)

    def update(self, done: int) -> None:
        self.done = done
        if self.out is None:
            return
        percent = min(done * 100 // self.total, 100)
        if percent != self._shown:
            self._shown = percent
            bar = "#" * (percent * 30 // 100)
            amount = f"{done // self.scale}/{self.total // self.scale}{self.unit}"
            self.out.write(f"\r{self.label}[{bar:30}] {percent:3d}% {amount}")
            if done >= self.total:
                self.out.write("\n")
            self.out.flush()


def terminal() -> TextIO | None:
    """stderr when it is a terminal (no bar in CI logs), else None."""
    return sys.stderr if sys.stderr.isatty() else None
