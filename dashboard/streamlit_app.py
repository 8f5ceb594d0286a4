"""SALE on Hopper: does SALE pay off, and why. `streamlit run dashboard` (traces/ by default)."""
import os

import streamlit as st

from dashboard.data import load_folder

st.set_page_config(page_title="SALE on Hopper", layout="wide")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRACES = os.environ.get("SALE_TRACES") or os.path.join(ROOT, "traces")
# the command lines' outputs (git-ignored), read beside the committed traces and labelled "runs/"
DEFAULT_RUNS = os.environ.get("SALE_RUNS") or os.path.join(ROOT, "runs")


def _signature(folder: str) -> tuple:
    """Names, sizes and mtimes of the folder's files: the cache key that notices new traces."""
    sig = []
    if os.path.isdir(folder):
        for root, _, files in os.walk(folder):
            for f in files:
                st_ = os.stat(os.path.join(root, f))
                sig.append((os.path.join(root, f), st_.st_size, st_.st_mtime_ns))
    return tuple(sorted(sig))


@st.cache_data(show_spinner="reading traces")
def _load(folder: str, signature: tuple, uploads: tuple, runs: str | None, runs_signature: tuple):
    return load_folder(folder, list(uploads), extra={"runs": runs} if runs else None)


with st.sidebar:
    st.header("Traces")
    folder = st.text_input("Trace folder", value=DEFAULT_TRACES, help="every .jsonl, maps .safetensors and "
                                                                      "thresholds .json under it is read")
    uploaded = st.file_uploader("or add trace files", accept_multiple_files=True,
                                type=["jsonl", "json", "safetensors"])
    with_runs = os.path.isdir(DEFAULT_RUNS) and st.checkbox(
        "also read runs/ (your command-line outputs)", value=True,
        help=f"{DEFAULT_RUNS}: what `python -m profiler ...` and `python -m sale ...` wrote; their files are "
             "labelled runs/... in every table")
uploads = tuple((f.name, f.getvalue()) for f in uploaded or [])
runs_folder = DEFAULT_RUNS if with_runs else None
traces = _load(folder, _signature(folder), uploads, runs_folder, _signature(runs_folder) if runs_folder else ())
st.session_state["traces"] = traces
with st.sidebar:
    st.caption(f"{len(traces.points)} sweep points, {len(traces.bench_select) + len(traces.bench_attend)} kernel "
               f"benchmark records, {len(traces.maps)} attention-map files, {len(traces.thresholds)} thresholds files")
    from_runs = sum(1 for r in traces.points + traces.bench_select + traces.bench_attend
                    if str(r.get("_file", "")).startswith("runs/"))
    if runs_folder:
        st.caption(f"of which {from_runs} records from runs/ (yours, not committed)")
    if traces.problems:  # one clear message per bad file or line; everything else still loaded
        st.subheader(f"{len(traces.problems)} lines or files skipped")
        for p in traces.problems[:50]:
            st.warning(p)
        if len(traces.problems) > 50:
            st.caption(f"... and {len(traces.problems) - 50} more")

pages = [
    st.Page("views/overview.py", title="Overview", default=True),
    st.Page("views/breakdown.py", title="Breakdown"),
    st.Page("views/attention_maps.py", title="Attention maps"),
    st.Page("views/thresholds.py", title="Threshold tuning"),
    st.Page("views/methods.py", title="Selection methods"),
    st.Page("views/peers.py", title="Block-sparse kernels"),
    st.Page("views/runs.py", title="Runs"),
]
st.navigation(pages).run()
