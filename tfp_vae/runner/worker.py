"""`python -m tfp_vae.runner.worker OUT.json`: run the spec read as JSON on stdin in
this fresh process and write its record to OUT.json. Errors become error records."""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from tfp_vae import SCHEMA_VERSION, __version__


def error_record(spec_dict: dict[str, Any], run_id: str, error: str, tb: str) -> dict[str, Any]:
    """The record of a run that raised: its spec, the error and the traceback."""
    return {"schema_version": SCHEMA_VERSION, "tfp_vae_version": __version__, "run_id": run_id,
            "spec": spec_dict, "status": "error", "error": error, "traceback": tb}


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out_path = sys.argv[1]
    spec_dict = json.loads(sys.stdin.read())
    from tfp_vae.config import spec_from_dict
    from tfp_vae.run import run, write_record

    spec = spec_from_dict(spec_dict)
    try:
        record = run(spec, log=lambda s: print(s, file=sys.stderr))
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded and the study goes on
        record = error_record(spec.to_dict(), spec.run_id(), f"{type(exc).__name__}: {exc}", traceback.format_exc())
    write_record(record, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
