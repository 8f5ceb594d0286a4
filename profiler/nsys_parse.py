"""Per-stage kernel time from an Nsight Systems SQLite export (``nsys export --type sqlite``).

A kernel belongs to the innermost NVTX push/pop range (of the "sale" domain) that encloses, on the same
thread, the CUDA runtime call that launched it: kernels and launches share a correlationId. Tables and
columns used, as nsys documents them: NVTX_EVENTS(start, end, eventType, text, textId, globalTid,
domainId), StringIds(id, value), CUPTI_ACTIVITY_KIND_RUNTIME(start, end, globalTid, correlationId),
CUPTI_ACTIVITY_KIND_KERNEL(start, end, correlationId, shortName, demangledName).

    python -m profiler nsys-breakdown report.sqlite
"""
from __future__ import annotations

import argparse
import sqlite3
from collections import defaultdict

NVTX_PUSH_POP = 59
NVTX_START_END = 60
NVTX_DOMAIN_CREATE = 75


def _tables(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def stage_breakdown(path: str, domain: str | None = "sale") -> dict:
    """{range name: {"kernel_ms", "kernels", "ranges"}} for NVTX ranges (of `domain`, None: all)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = _tables(con)
        missing = {"NVTX_EVENTS", "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_RUNTIME"} - tables
        if missing:
            raise ValueError(f"{path}: not an nsys export with NVTX and CUDA traces (missing tables {sorted(missing)})")
        strings = dict(con.execute("SELECT id, value FROM StringIds")) if "StringIds" in tables else {}
        domain_ids = None
        if domain is not None:
            domain_ids = {d for d, t, tid in con.execute(
                "SELECT domainId, text, textId FROM NVTX_EVENTS WHERE eventType = ?", (NVTX_DOMAIN_CREATE,))
                if (t if t is not None else strings.get(tid)) == domain}
        ranges = defaultdict(list)  # globalTid -> [(start, end, name)]
        for start, end, text, text_id, tid, dom in con.execute(
                "SELECT start, end, text, textId, globalTid, domainId FROM NVTX_EVENTS "
                "WHERE eventType IN (?, ?) AND end IS NOT NULL", (NVTX_PUSH_POP, NVTX_START_END)):
            if domain_ids is not None and dom not in domain_ids:
                continue
            name = text if text is not None else strings.get(text_id, f"<string {text_id}>")
            ranges[tid].append((start, end, name))
        launches = {corr: (start, tid) for start, tid, corr in con.execute(
            "SELECT start, globalTid, correlationId FROM CUPTI_ACTIVITY_KIND_RUNTIME")}
        out = {}
        for name_list in ranges.values():
            for _, _, name in name_list:
                out.setdefault(name, {"kernel_ms": 0.0, "kernels": 0, "ranges": 0})["ranges"] += 1
        for start, end, corr in con.execute("SELECT start, end, correlationId FROM CUPTI_ACTIVITY_KIND_KERNEL"):
            launch = launches.get(corr)
            if launch is None:
                continue
            t, tid = launch
            enclosing = [r for r in ranges.get(tid, ()) if r[0] <= t <= r[1]]
            if not enclosing:
                continue
            name = min(enclosing, key=lambda r: r[1] - r[0])[2]  # innermost
            out[name]["kernel_ms"] += (end - start) / 1e6
            out[name]["kernels"] += 1
        return out
    finally:
        con.close()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m profiler nsys-breakdown", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sqlite")
    p.add_argument("--domain", default="sale", help="NVTX domain to keep ('' for every range)")
    a = p.parse_args(argv)
    rows = stage_breakdown(a.sqlite, a.domain or None)
    print(f"{'range':<40} {'ranges':>7} {'kernels':>8} {'kernel ms':>10}")
    for name, r in sorted(rows.items(), key=lambda kv: -kv[1]["kernel_ms"]):
        print(f"{name:<40} {r['ranges']:>7} {r['kernels']:>8} {r['kernel_ms']:>10.3f}")


if __name__ == "__main__":
    main()
