"""Silence a framework's start-up noise without hiding real warnings.

TensorFlow's C++ runtime writes INFO lines (oneDNN, CUDA stubs, CPU features) to file
descriptor 2 before its logging is configured, so TF_CPP_MIN_LOG_LEVEL cannot stop them.
`startup_noise_filtered()` sends descriptor 2 to a temporary file while a framework loads
or probes devices, then writes back every line that is not one of those known messages.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

NOISE = re.compile(
    "|".join(
        [
            r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
            r"^I0000 \S+ +\d+ \S+\] ",  # INFO lines of the C++ runtime
            r"cuda_platform\.cc:\d+\] failed call to cuInit",  # no GPU on this machine: not an error here
            r"^To enable the following instructions: .* rebuild TensorFlow",
            r"^This TensorFlow binary is optimized to use available CPU instructions",
        ]
    )
)


@contextlib.contextmanager
def startup_noise_filtered() -> Iterator[None]:
    """Run the body with fd 2 captured; replay what it wrote, minus the known start-up lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. an embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines() if not NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
