"""What a running study prints: counts, an ETA, each finished run's summary and, on a terminal,
a progress bar that shows the epoch each running run has reached."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

#: A worker's epoch line ("  seed 1: epoch 94/1000: ..."), the epoch and the budget.
EPOCH_RE = re.compile(r"epoch \d+/\d+")


@dataclass
class Progress:
    """Counts over the whole study. On a terminal a tqdm progress bar (its ETA is tqdm's:
    the observed rate times what remains); otherwise, as in logs and CI, one line per event."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    started: float = field(default_factory=time.perf_counter)
    out: Callable[[str], None] | None = None
    bar: Any = None

    def start(self, text: str) -> None:
        """Print the opening line, and open the bar when stderr is a terminal and no `out` is set."""
        if self.out is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.skipped, unit="run", file=sys.stderr, dynamic_ncols=True)
        self.line(text)

    def line(self, text: str, finished_one: bool = False) -> None:
        finished = self.done + self.failed
        if self.bar is not None:
            if finished_one:
                self.bar.update(1)
            self.bar.set_postfix_str(f"failed {self.failed}", refresh=False)
            self.bar.write(text, file=sys.stderr)
            return
        elapsed = time.perf_counter() - self.started
        remaining = self.total - self.skipped - finished
        # elapsed / finished is already the wall time per run with the workers in parallel
        eta = f"{elapsed / finished * remaining:.0f}s" if finished else "?"
        (self.out or (lambda s: print(s, file=sys.stderr, flush=True)))(
            f"[{finished + self.skipped}/{self.total}] done {self.done + self.skipped} failed {self.failed} "
            f"running {self.running} eta {eta} | {text}"
        )

    def epochs(self, latest: list[str | None]) -> None:
        """On the bar, the epoch each running run has reached ("epoch 94/1000"), so that a long run
        shows progress between finished runs (without a bar the heartbeat lines say it)."""
        if self.bar is None:
            return
        reached = [m.group(0) for m in (EPOCH_RE.search(t or "") for t in latest) if m]
        self.bar.set_postfix_str(f"failed {self.failed}" + (f"; {', '.join(reached)}" if reached else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(record: dict[str, Any]) -> str:
    if record["status"] == "error":
        return f"FAILED {record['error']}"
    m, t = record["metrics"], record["timing"]
    iwae = "n/a" if m["iwae_ll"] is None else f"{m['iwae_ll']:.2f}"
    return f"{record['status']} iwae_ll {iwae} collapse {m['variance_collapse']} ({t['wall_s']:.1f}s)"
