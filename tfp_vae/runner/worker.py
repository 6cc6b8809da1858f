"""`python -m tfp_vae.runner.worker`: a worker process that stays up between seed groups.

The study runner starts a few of these and sends each one seed group at a time, one
JSON line on stdin: {"specs": [spec dicts], "out": directory}. The worker trains the
group (seed batching), writes each record atomically to directory/<run_id>.json as soon
as it is ready (in the sequential layout, seed by seed) and, when all are, answers with
the line "done". End of input ends the process. A group that raises is
retried one seed at a time, so one failing seed leaves the others' records intact;
what still raises becomes an error record."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator, TextIO

from tfp_vae import SCHEMA_VERSION, __version__

#: What the worker answers when a group's records are written.
DONE = "done"


def error_record(spec_dict: dict[str, Any], run_id: str, error: str, tb: str) -> dict[str, Any]:
    """The record of a run that raised: its spec, the error and the traceback."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tfp_vae_version": __version__,
        "run_id": run_id,
        "spec": spec_dict,
        "status": "error",
        "error": error,
        "traceback": tb,
    }


def records_of_group(spec_dicts: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Records of one seed group, each as soon as it is ready (run.group_records); never raises."""
    from tfp_vae.config import spec_from_dict
    from tfp_vae.run import group_records

    log = lambda s: print(s, file=sys.stderr, flush=True)
    specs = [spec_from_dict(d) for d in spec_dicts]
    recorded = set()
    try:
        for record in group_records(specs, log):
            recorded.add(record["run_id"])
            yield record
    except Exception:
        rest = [d for d, spec in zip(spec_dicts, specs) if spec.run_id() not in recorded]
        if len(specs) > 1:
            log(f"seed group failed:\n{traceback.format_exc()}retrying its seeds without a record one at a time")
            for spec_dict in rest:
                yield from records_of_group([spec_dict])
            return
        exc_type, exc, _ = sys.exc_info()
        yield error_record(specs[0].to_dict(), specs[0].run_id(), f"{exc_type.__name__}: {exc}", traceback.format_exc())


def serve(requests: TextIO, answers: TextIO) -> None:
    """Answer seed-group requests until the input ends."""
    from tfp_vae.records import write_record

    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        for record in records_of_group(request["specs"]):
            write_record(record, Path(request["out"]) / f"{record['run_id']}.json")
        answers.write(DONE + "\n")
        answers.flush()


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # answers go to the original stdout; anything else written to fd 1 (by Python or by a
    # framework's C++ code) goes to stderr, so it cannot corrupt the protocol
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
