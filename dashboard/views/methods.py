import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, table, traces


def _by_method(records):
    """(model, budget, method) -> the records of that method's newest evaluation (they share its time stamp)."""
    newest = {}
    for r in records:
        key = (r.get("model"), r.get("budget"), r["selection"])
        newest[key] = max(newest.get(key, ""), r.get("time", ""))
    out = {}
    for r in records:
        key = (r.get("model"), r.get("budget"), r["selection"])
        if r.get("time", "") == newest[key]:
            out.setdefault(key, []).append(r)
    return out


st.title("Selection methods: speed against accuracy")
t = traces()
if need(bool(t.bench_methods), "No selection-method benchmarks here. Run `python -m profiler bench-methods` on your "
                               "GPU (or pick another folder in the sidebar)."):
    inputs = sorted({(r["source"], r["seq_len"]) for r in t.bench_methods})
    source, n = st.selectbox("input", inputs, index=len(inputs) - 1, format_func=lambda x: f"{x[0]}, N={x[1]}")
    counted = st.radio("speedup counts", ["selection + attend", "the masks alone (attend only)"], horizontal=True,
                       help="the masks alone: dense ms / attend ms, the selection's cost left out (how few blocks each "
                            "method keeps for an error)")
    figure(figures.methods_figure(t.bench_methods, source, n, masks_only=counted.startswith("the masks")),
           f"methods_{n}")
    st.caption("Each line follows one method through its knob (SALE: tau; pooled and XAttention: mass; "
               "vertical-slash: top_k; FlexPrefill: gamma). Up and to the left is better. Every method runs the same "
               "computation pass; the methods other than SALE select in plain PyTorch.")
    rows = sorted((r for r in t.bench_methods if r["source"] == source and r["seq_len"] == n),
                  key=lambda r: (r["method"], r["knob"]))
    table(rows, f"methods_{n}", ["method", "knob_name", "knob", "select_ms", "attend_ms", "density", "speedup",
                                 "rel_l1", "rel_l2", "recall", "gpu", "time"])

st.header("At equal accuracy on a real model")
real = [r for r in t.accuracy if r.get("selection")]
if need(bool(real), "No real-model comparison here. Run `python -m sale compare-methods` (every method calibrated "
                    "to one output-error budget on the model, then needles and held-out text against dense)."):
    rows = []
    for (model, budget, method), group in sorted(_by_method(real).items()):
        needles = [r for r in group if r["kind"] == "needle"]
        held = [r for r in group if r["kind"] == "held_out"]
        rows.append({"model": model, "budget (rel. L1)": budget, "method": method,
                     "knob": f"{group[0].get('knob_name')}={group[0].get('knob'):.4g}",
                     "calibration error": group[0].get("calibration_error"),
                     "density (held-out)": held[0]["density"] if held else None,
                     "next-token agreement": held[0]["next_token_agreement"] if held else None,
                     "KL(dense || method)": held[0]["kl_dense_sale"] if held else None,
                     "needles found": f"{sum(r['sale_correct'] for r in needles)} / {len(needles)} "
                                      f"(dense {sum(r['dense_correct'] for r in needles)})"})
    table(rows, "methods_real_model")
    st.caption("Each method's knob is calibrated once for the whole model so that its attention output's relative L1 "
               "error against dense, averaged over heads, global layers and the calibration prompts, stays within "
               "the budget with the fewest blocks; then the model runs with it.")
