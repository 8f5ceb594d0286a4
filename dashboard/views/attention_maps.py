
import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, traces

st.title("Which blocks a head keeps")
t = traces()
if need(bool(t.maps), "No attention-map files (.safetensors). Make one with `python -m profiler capture-maps`."):
    name = st.selectbox("capture", list(t.maps))
    meta, arrays = t.maps[name]
    st.caption(f"{meta.get('source', '')}: N={meta['seq_len']}, D={meta['head_dim']}, blocks {meta['block_q']}x"
               f"{meta['block_k']}, local window {meta['local_window']}")
    c1, c2, c3 = st.columns(3)
    head = c1.selectbox("head", meta["heads"])
    log_tau = c2.slider("threshold tau (log10)", -5.0, 0.0, -2.0, 0.1)
    tau = 10 ** log_tau
    c3.metric("density at this tau", f"{figures.whatif_density(arrays, head, tau):.3f}")
    nqb = arrays["always"].shape[0]
    lo, hi = st.slider("query blocks shown (zoom)", 0, nqb, (0, nqb))
    for kind in ("exact", "estimate", "log_ras"):
        figure(figures.attention_map_figure(meta, arrays, head, kind, tau, (lo, max(hi, lo + 1))),
               f"{kind}_head{head}")
