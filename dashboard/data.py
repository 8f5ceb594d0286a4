"""Loading a trace folder (or uploaded files) for the dashboard: sweep traces (.jsonl, schema
sale-trace/1), kernel benchmarks (sale-bench-select/1, sale-bench-attend/1, sale-bench-methods/1, sale-bench-peers/1), estimate trade-offs
(sale-estimate-tradeoff/1), real-model accuracy (sale-accuracy/1), attention maps
(.safetensors, sale-maps/1) and thresholds files (.json, sale-thresholds/1). A file or line that cannot
be read is reported with its reason; everything else still loads."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os

import numpy as np

from profiler import trace  # schema and validation only (no torch)

BENCH_SCHEMAS = {"sale-bench-select/1": ("seq_len", "quantize_ms", "select_ms", "fastest_dense_ms"),
                 "sale-bench-attend/1": ("seq_len", "kind"),
                 "sale-accuracy/1": ("kind", "seq_len", "density", "theta"),
                 "sale-estimate-tradeoff/1": ("head", "threshold", "density", "rel_l1_vs_dense", "recall_mean"),
                 "sale-bench-methods/1": ("method", "knob", "seq_len", "source"),
                 "sale-bench-peers/1": ("seq_len", "density", "mask_grain", "project_ms", "peers_ms", "cudnn_ms")}


# Fields the pages read, by kind of check: a page takes logs and ratios of these, so they must be finite numbers
# >= 0 where present (None allowed: a stage that did not run). Dicts of them (per tile, per backend) likewise.
NONNEGATIVE = ("density", "rel_l1", "speedup", "estimate_pct_of_dense", "sale_ms", "dense_ms", "quantize_ms",
               "select_ms", "attend_ms", "fastest_dense_ms", "theta", "threshold", "next_token_agreement",
               "kl_dense_sale", "perplexity_dense", "perplexity_sale", "recall_mean", "recall_min",
               "rel_l1_vs_dense", "overhead_pct", "depth", "sparse_ms", "efficiency", "cudnn_ms", "dense_all_ms",
               "knob", "rel_l2", "recall", "project_ms", "peers_ms", "project_efficiency", "peers_efficiency",
               "max_abs_diff", "max_abs_err", "peers_plan_ms", "project_plan_ms")
STRINGS = ("gpu", "kind", "run_id", "time", "workload", "model", "backend", "mask_source", "method", "dense_backend", "mask_grain")
BOOLS = ("sale_correct", "dense_correct")


def _number_problem(name: str, value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        for key, v in value.items():
            why = _number_problem(f"{name}[{key!r}]", v)
            if why:
                return why
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"field {name!r} must be a number, got {value!r:.40}"
    if not math.isfinite(value) or value < 0:
        return f"field {name!r} must be a finite number >= 0, got {value!r}"
    return None


def record_problem(rec: dict) -> str | None:
    """Why a benchmark, accuracy or trade-off record cannot be drawn (None if it can): a required field missing,
    seq_len not a positive int, a field the pages take a log or ratio of not a finite number >= 0, a name not a
    string, a verdict not a bool."""
    schema = rec.get("schema")
    missing = [f for f in BENCH_SCHEMAS.get(schema, ()) if f not in rec]
    if missing:
        return f"{schema} record lacks {missing}"
    n = rec.get("seq_len")
    if "seq_len" in rec and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        return f"field 'seq_len' must be an int >= 1, got {n!r:.40}"
    for name in NONNEGATIVE:
        if name in rec:
            why = _number_problem(name, rec[name])
            if why:
                return why
    for name in STRINGS:
        if name in rec and rec[name] is not None and not isinstance(rec[name], str):
            return f"field {name!r} must be a string, got {rec[name]!r:.40}"
    for name in BOOLS:
        if name in rec and not isinstance(rec[name], bool):
            return f"field {name!r} must be true or false, got {rec[name]!r:.40}"
    return None


@dataclasses.dataclass
class TraceSet:
    points: list = dataclasses.field(default_factory=list)        # sweep points
    summaries: list = dataclasses.field(default_factory=list)     # sweep summaries (break-even)
    bench_select: list = dataclasses.field(default_factory=list)
    bench_attend: list = dataclasses.field(default_factory=list)
    accuracy: list = dataclasses.field(default_factory=list)      # real-model accuracy vs dense
    estimate_tradeoff: list = dataclasses.field(default_factory=list)  # estimate_rows vs the exact estimate
    bench_methods: list = dataclasses.field(default_factory=list)  # selection methods on the same kernels
    bench_peers: list = dataclasses.field(default_factory=list)    # the computation pass against peer kernels
    maps: dict = dataclasses.field(default_factory=dict)          # name -> (metadata, {array name: array})
    thresholds: dict = dataclasses.field(default_factory=dict)    # name -> thresholds document
    problems: list = dataclasses.field(default_factory=list)      # "file: why"

    @property
    def empty(self) -> bool:
        return not (self.points or self.bench_select or self.bench_attend or self.accuracy or self.maps
                    or self.thresholds or self.estimate_tradeoff or self.bench_methods
                    or self.bench_peers)


def _jsonl(name: str, text: str, out: TraceSet) -> None:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            out.problems.append(f"{where}: not valid JSON ({exc.msg}); a truncated or corrupt line")
            continue
        schema = rec.get("schema") if isinstance(rec, dict) else None
        if schema in BENCH_SCHEMAS:
            why = None if rec.get("error") else record_problem(rec)
            if why:
                out.problems.append(f"{where}: {why}")
            elif not rec.get("error"):
                target = {"sale-bench-select/1": out.bench_select, "sale-bench-attend/1": out.bench_attend,
                          "sale-accuracy/1": out.accuracy, "sale-estimate-tradeoff/1": out.estimate_tradeoff,
                          "sale-bench-methods/1": out.bench_methods, "sale-bench-peers/1": out.bench_peers}[schema]
                target.append(rec | {"_file": name})
            continue
        if isinstance(schema, str) and schema.startswith("sale-trace/") and schema != trace.SCHEMA:
            out.problems.append(f"{where}: schema {schema} is not supported (this dashboard reads {trace.SCHEMA})")
            continue
        try:
            rec = trace.validate(rec)
        except trace.TraceError as exc:
            out.problems.append(f"{where}: {exc}")
            continue
        (out.points if rec["kind"] == "point" else out.summaries).append(rec | {"_file": name})


def _maps(name: str, data: bytes, out: TraceSet) -> None:
    from safetensors.numpy import load
    try:
        arrays = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8:8 + header_len])["__metadata__"]["sale"])
        if meta.get("schema") != "sale-maps/1":
            raise ValueError(f"schema {meta.get('schema')!r} is not sale-maps/1")
        for field in ("seq_len", "block_q", "block_k"):
            if isinstance(meta.get(field), bool) or not isinstance(meta.get(field), int) or meta[field] < 1:
                raise ValueError(f"metadata {field!r} must be an int >= 1, got {meta.get(field)!r}")
        if not isinstance(meta.get("heads"), list):
            raise ValueError(f"metadata 'heads' must be a list, got {meta.get('heads')!r}")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
        out.problems.append(f"{name}: not a readable attention-map file ({exc})")
        return
    out.maps[name] = (meta, arrays)


def _thresholds(name: str, text: str, out: TraceSet) -> None:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("schema") != "sale-thresholds/1":
            raise ValueError(f"schema {doc.get('schema') if isinstance(doc, dict) else None!r} is not sale-thresholds/1")
        tau = np.asarray(doc["thresholds"], dtype=float)   # ragged layers or strings fail here
        if tau.ndim != 2 or not tau.size or not np.isfinite(tau).all() or (tau < 0).any():
            raise ValueError("'thresholds' must be [layers][heads] of finite numbers >= 0")
        for field in ("density", "error_per_token"):
            if field in doc:
                extra = np.asarray(doc[field], dtype=float)
                if extra.shape != tau.shape or not np.isfinite(extra).all():
                    raise ValueError(f"{field!r} must be finite numbers shaped like 'thresholds' {tau.shape}")
    except Exception as exc:  # noqa: BLE001
        out.problems.append(f"{name}: not a readable thresholds file ({exc})")
        return
    out.thresholds[name] = doc


def add_file(out: TraceSet, name: str, data: bytes) -> None:
    if name.endswith(".jsonl"):
        _jsonl(name, data.decode("utf-8", errors="replace"), out)
    elif name.endswith(".safetensors"):
        _maps(name, data, out)
    elif name.endswith(".json") and "thresholds" in os.path.basename(name):
        _thresholds(name, data.decode("utf-8", errors="replace"), out)


def _add_folder(out: TraceSet, folder: str, prefix: str = "") -> None:
    if not os.path.isdir(folder):
        out.problems.append(f"{folder}: no such folder")
        return
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            path = os.path.join(root, f)
            rel = prefix + os.path.relpath(path, folder)
            if f.endswith((".jsonl", ".safetensors")) or (f.endswith(".json") and "thresholds" in f):
                with open(path, "rb") as fh:
                    add_file(out, rel, fh.read())


def load_folder(folder: str, uploads: list[tuple[str, bytes]] | None = None,
                extra: dict[str, str] | None = None) -> TraceSet:
    """Every trace file under `folder` (recursively), plus uploaded (name, bytes) pairs, plus the files of each
    `extra` folder (label -> path), named "label/..." so that tables and sidebars say where a record came from."""
    out = TraceSet()
    if folder:
        _add_folder(out, folder)
    for label, path in (extra or {}).items():
        _add_folder(out, path, prefix=f"{label}/")
    for name, data in uploads or []:
        add_file(out, f"upload:{name}", data)
    return out


def to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    buf.write(",".join(columns) + "\n")
    for r in rows:
        buf.write(",".join("" if r.get(c) is None else str(r.get(c)) for c in columns) + "\n")
    return buf.getvalue()
