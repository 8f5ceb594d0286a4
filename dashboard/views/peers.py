import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, table, traces

st.title("Block-sparse kernels: ours against the peers")
t = traces()
if need(bool(t.bench_peers), "No peer-kernel benchmarks here. Run `python -m profiler bench-peers` on your GPU "
                             "(or pick another folder in the sidebar)."):
    lengths = sorted({r["seq_len"] for r in t.bench_peers})
    left, right = st.columns(2)
    n = left.selectbox("sequence length", lengths, index=len(lengths) - 1)
    grains = sorted({r["mask_grain"] for r in t.bench_peers if r["seq_len"] == n})
    grain = right.selectbox("mask grain", grains, help="128x128: random causal masks every peer takes; "
                            "64x32: SALE's own masks on the structured workload, for the peers that take them")
    figure(figures.peers_figure(t.bench_peers, n, grain, "ms"), f"peers_ms_{n}_{grain}")
    figure(figures.peers_figure(t.bench_peers, n, grain, "efficiency"), f"peers_eff_{n}_{grain}")
    st.caption("Every implementation runs on the same block mask, timed as CUDA-graph replay (median); building a "
               "peer's block format is timed apart. cuDNN's block-sparse kernel has no causal mask inside a block, "
               "so its diagonal blocks also see later keys: its time is for the same blocks, its output differs.")
    rows = []
    for r in figures.peers_rows(t.bench_peers, n, grain):
        row = {"density": r["density"], "ours ms": r["project_ms"], "cuDNN dense ms": r.get("cudnn_ms")}
        for name, ms in r.get("peers_ms", {}).items():
            row[f"{name} ms"] = ms
        row["best peer"] = r.get("best_peer")
        row["ours / best peer"] = (r["project_ms"] / r["best_peer_ms"]) if r.get("best_peer_ms") else None
        row["not run"] = "; ".join(f"{p}: {why}" for p, why in r.get("peers_errors", {}).items())
        rows.append(row)
    table(rows, f"peers_{n}_{grain}", list(dict.fromkeys(c for r in rows for c in r)))
