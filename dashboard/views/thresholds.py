import streamlit as st

from dashboard import figures
from dashboard.ui import figure, need, table, traces
from profiler.analysis import EXACT, option_of

st.title("Thresholds: accuracy against speed")
t = traces()
if t.thresholds:
    names = list(t.thresholds)
    # open on a calibrated file (some threshold > 0), not the all-zero control
    calibrated = [n for n in names if any(tau > 0 for layer in t.thresholds[n]["thresholds"] for tau in layer)]
    name = st.selectbox("thresholds file", names, index=names.index(calibrated[0]) if calibrated else 0)
    doc = t.thresholds[name]
    figure(figures.thresholds_heatmap(doc), "thresholds")
    rows = [{"layer": l, "head": h, "tau": tau, "error_per_token": doc["error_per_token"][l][h],
             "density": doc["density"][l][h]} for l, layer in enumerate(doc["thresholds"]) for h, tau in enumerate(layer)]
    table(rows, "thresholds")
else:
    st.info("No thresholds files. Make one with `python -m sale calibrate`.")
if t.accuracy:
    st.subheader("Real model: accuracy against dense attention")
    figure(figures.accuracy_figure(t.accuracy), "accuracy")
    held, needles = figures.accuracy_rows(t.accuracy)
    st.caption("theta = 0 is the control: every block computed through SALE's kernels (the numeric floor).")
    table(held, "accuracy_held_out")
    table(needles, "accuracy_needles")
options = {option_of(p) for p in t.points if p.get("error") is None and p.get("rel_l1")}
if len(options) > 1:
    st.subheader("Speed against accuracy: SALE's defaults and the other configurations")
    lengths = sorted({p["seq_len"] for p in t.points if option_of(p) != EXACT})
    n = st.selectbox("sequence length", lengths, index=len(lengths) - 1, key="speed-error-n")
    figure(figures.speed_error_figure(t.points, n), f"speed_error_N{n}")
    st.caption("Speedup each estimate option reaches at the exact estimate's error (interpolated along its "
               "thresholds; '-' where its thresholds do not reach that error). Same table: "
               "`python -m profiler matched-error <sweep traces>`.")
    table(figures.matched_error_rows(t.points), "matched_error")
if t.estimate_tradeoff:
    st.subheader("Reduced-work estimate (estimate_rows) against the exact estimate")
    st.caption("Each line sweeps the threshold. An option pays off where its line lies below the exact "
               "estimate's at the same density: same error, with a fraction of the estimation work.")
    figure(figures.estimate_tradeoff_figure(t.estimate_tradeoff), "estimate_tradeoff")
    table(figures.estimate_tradeoff_rows(t.estimate_tradeoff), "estimate_tradeoff")
if t.maps or t.points:
    figure(figures.density_error_figure(t.maps, t.points), "density_error")
if need(bool(t.maps), "What-if needs an attention-map file with stored block scores."):
    st.subheader("What if: recompute kept blocks from the stored estimate")
    name = st.selectbox("capture", list(t.maps), key="whatif-capture")
    meta, arrays = t.maps[name]
    log_tau = st.slider("threshold tau (log10)", -5.0, 0.0, -2.0, 0.05, key="whatif-tau")
    rows = []
    for h in meta["heads"]:
        grid = arrays["tau_grid"]
        dens = figures.whatif_density(arrays, h, 10 ** log_tau)
        # error at the captured grid's nearest tau at or below this one (errors were measured on the grid)
        below = [i for i, g in enumerate(grid) if g <= 10 ** log_tau]
        i = below[-1] if below else 0
        rows.append({"head": h, "tau": 10 ** log_tau, "density": dens, "grid_tau": float(grid[i]),
                     "rel_l1_at_grid_tau": float(arrays[f"head{h}.rel_l1"][i])})
    table(rows, "whatif")
