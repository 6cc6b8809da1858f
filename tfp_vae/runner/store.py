"""The result store: one JSON record per run under <root>/<study>/<run_id>.json.

Records are written atomically (temporary file, fsync, rename), so a killed
process leaves either a whole record or none (and at most a temporary file, removed when the
run is next claimed). A run is claimed with a lock file
created by O_CREAT | O_EXCL, so two invocations of one study never run one spec
twice; a lock whose process is gone is taken over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tfp_vae import SCHEMA_VERSION
from tfp_vae.records import write_record

DONE_STATUSES = ("ok", "nonfinite")  # a diverged run is a finished result, not a failure


class ResultStore:
    def __init__(self, root: str | Path, study: str):
        self.dir = Path(root) / study

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def read(self, run_id: str) -> dict[str, Any] | None:
        """The record of a run, or None if absent or unreadable (treated as not run)."""
        try:
            record = json.loads(self.path(run_id).read_text())
        except (OSError, ValueError):
            return None
        return record if record.get("schema_version") == SCHEMA_VERSION else None

    def status(self, run_id: str) -> str:
        """'done', 'failed' or 'pending'."""
        record = self.read(run_id)
        if record is None:
            return "pending"
        return "done" if record.get("status") in DONE_STATUSES else "failed"

    def write(self, record: dict[str, Any]) -> Path:
        return write_record(record, self.path(record["run_id"]))

    # -- claims ----------------------------------------------------------------------
    def _lock(self, run_id: str) -> Path:
        return self.dir / f".{run_id}.lock"

    def claim(self, run_id: str) -> bool:
        """Atomically claim a run for this process; False if another live process holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock(run_id)
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _alive(lock):
                    return False
                lock.unlink(missing_ok=True)  # stale: its process died
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            # a record half written when its writer was killed: nobody else can be writing it now
            for partial in self.dir.glob(f".{run_id}.json.*"):
                partial.unlink(missing_ok=True)
            return True
        return False

    def release(self, run_id: str) -> None:
        self._lock(run_id).unlink(missing_ok=True)


def _alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return True  # being written right now by its owner
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
