"""A progress bar on stderr for runs that last (shown after 2 s, only on a terminal)."""

from __future__ import annotations

import math
import sys


class Progress:
    """Simulated seconds done out of `total`; does nothing off a terminal or when disabled."""

    def __init__(self, total: float, enabled: bool = True):
        self.bar = None
        self.done = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            digits = min(6, max(0, 2 - math.floor(math.log10(total))))
            fmt = f"{{n:,.{digits}f}}/{{total:,.{digits}f}}"
            self.bar = tqdm(total=total, delay=2.0, unit="sim s", file=sys.stderr,
                            leave=False, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| " + fmt + " sim s [{elapsed}<{remaining}]")

    def to(self, now: float) -> None:
        """The run has reached `now` simulated seconds (counting earlier runs)."""
        if self.bar is not None:
            self.bar.update(now - self.done)
        self.done = now

    def close(self) -> None:
        """Take the bar off the screen (also after Ctrl-C)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
