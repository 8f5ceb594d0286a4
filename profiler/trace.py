"""Trace files: one JSON object per line (.jsonl), a versioned schema checked on write and on read.

Each record is appended as one line under an exclusive file lock (``sale._io.append_line``), so several
processes may write one file at once without losing a record, an interrupted sweep keeps every finished
point, and an append costs the same at any file size. Readers skip (and report) lines that are corrupt,
torn or of another schema version.
"""
from __future__ import annotations

import json
import math
import os

SCHEMA = "sale-trace/1"

# Fields every sweep point carries, with the types they may take (None: the value may be null, as
# for a point that failed or a stage that does not apply).
POINT_FIELDS = {
    "schema": (str,), "kind": (str,), "run_id": (str,), "git_commit": (str, type(None)), "time": (str,),
    "gpu": (str,), "backend": (str,), "workload": (str,), "batch": (int,), "num_q_heads": (int,),
    "num_kv_heads": (int,), "head_dim": (int,), "dtype": (str,), "granularity": (str,), "seq_len": (int,),
    "threshold": (float, int), "quantize_ms": (float, type(None)), "select_ms": (float, type(None)),
    "attend_ms": (float, type(None)), "sale_ms": (float, type(None)), "dense_ms": (float, type(None)),
    "dense_backend": (str, type(None)), "density": (float, type(None)), "overhead_pct": (float, type(None)),
    "speedup": (float, type(None)), "gpu_context": (dict,), "error": (str, type(None)),
}
# Fields added after the first traces were written: checked when present (old traces lack them).
OPTIONAL_FIELDS = {"estimate_rows": (int, type(None)),  # None: every query row estimated (the exact mask)
                   "block_q": (int, type(None))}        # None: 64, SALE's default
KINDS = ("point", "summary")


class TraceError(ValueError):
    """A record that does not follow the trace schema."""


def validate(record: dict) -> dict:
    """Return `record` if it follows the schema, else raise TraceError naming the field."""
    if not isinstance(record, dict):
        raise TraceError(f"a trace record must be a JSON object, got {type(record).__name__}")
    if record.get("schema") != SCHEMA:
        raise TraceError(f"schema must be {SCHEMA!r}, got {record.get('schema')!r}")
    if record.get("kind") not in KINDS:
        raise TraceError(f"kind must be one of {KINDS}, got {record.get('kind')!r}")
    if record["kind"] == "summary":
        for name in ("run_id", "break_even"):
            if name not in record:
                raise TraceError(f"summary record lacks field {name!r}")
        return record
    for name, types in POINT_FIELDS.items():
        if name not in record:
            raise TraceError(f"record lacks field {name!r}")
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise TraceError(f"field {name!r} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value) and name != "threshold":
            raise TraceError(f"field {name!r} must be finite, got {value!r}")
    for name, types in OPTIONAL_FIELDS.items():
        value = record.get(name)
        if isinstance(value, bool) or not isinstance(value, types) or (isinstance(value, int) and value < 1):
            raise TraceError(f"field {name!r} must be a positive int or null, got {value!r}")
    if record["error"] is None and record["sale_ms"] is None:
        raise TraceError("a point without an error must have sale_ms")
    return record


def append(path: str, record: dict) -> None:
    """Validate `record` and append it to the .jsonl file at `path` as one line, under a lock."""
    from sale._io import append_line  # here, not at the top: readers (the dashboard) never import sale or torch
    append_line(path, json.dumps(validate(record), allow_nan=False))


def read(path: str) -> tuple[list[dict], list[str]]:
    """Records of one trace file and a list of problems ("file:line: why") for lines skipped."""
    records, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(validate(json.loads(line)))
            except (json.JSONDecodeError, TraceError) as exc:
                problems.append(f"{os.path.basename(path)}:{number}: {exc}")
    return records, problems
