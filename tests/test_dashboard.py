"""Dashboard: figure builders on trace data, an AppTest per page on the committed traces and on a
corrupt folder, and one real-browser test (Debian chromium, headless) that finds a rendered chart."""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("plotly", reason="the dashboard's dependencies (pip install -e .) are not installed here")
pytest.importorskip("streamlit", reason="the dashboard's dependencies (pip install -e .) are not installed here")

from dashboard import figures  # noqa: E402
from dashboard.data import load_folder  # noqa: E402
from profiler.analysis import EXACT, option_label, option_of  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACES = os.path.join(ROOT, "traces")
APP = os.path.join(ROOT, "dashboard", "streamlit_app.py")
PAGES = ["views/overview.py", "views/breakdown.py", "views/attention_maps.py", "views/thresholds.py",
         "views/methods.py", "views/peers.py", "views/runs.py"]


@pytest.fixture(scope="module")
def committed():
    return load_folder(TRACES)


def test_dashboard_never_imports_torch_or_kernels():
    code = ("import sys; import dashboard.data, dashboard.figures, dashboard.ui; "
            "bad = [m for m in ('torch', 'triton', 'sale') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_committed_traces_load_cleanly(committed):
    assert committed.problems == []
    assert len(committed.points) >= 24 and committed.summaries and committed.bench_select and committed.bench_attend
    assert committed.maps and committed.thresholds and committed.accuracy and committed.estimate_tradeoff


def test_accuracy_rows(committed):
    held, needles = figures.accuracy_rows(committed.accuracy)
    own = [r for r in committed.accuracy if not r.get("selection")]   # the methods comparison has its own page
    assert len(held) == sum(r["kind"] == "held_out" for r in own) and len(needles) == sum(r["kind"] == "needle" for r in own)
    models = list(dict.fromkeys(r["model"] for r in held))
    assert {"SmolLM2-135M-Instruct", "Gemma 3 270M"} <= set(models)
    for model in models:
        thetas = [r["theta"] for r in held if r["model"] == model]
        assert thetas == sorted(thetas)
    control = next(r for r in held if r["theta"] == 0.0)
    assert control["density"] == 1.0
    assert all(isinstance(r["sale_correct"], bool) for r in needles)
    fig = figures.accuracy_figure(committed.accuracy)
    assert list(fig.data[0].x) == [r["density"] for r in held if r["model"] == models[0]]
    assert len(fig.data) == 2 * len(models)   # agreement and KL per model


def test_overhead_figure_data(committed):
    fig = figures.overhead_figure(committed.points, committed.bench_select)
    sweep = [tr for tr in fig.data if tr.name.startswith("sweep")]
    options = {option_of(p) for p in committed.points}
    assert [tr.name for tr in sweep] == [f"sweep, {option_label(o)}" for o in sorted(options)]
    exact = next(tr for tr in sweep if tr.name == "sweep, exact estimate")
    # per length: the median over thresholds of the latest run that measured that length
    for n, y in zip(exact.x, exact.y):
        pts = [p for p in committed.points if p["seq_len"] == n and option_of(p) == EXACT and p["error"] is None]
        run = max(pts, key=lambda p: p["time"])["run_id"]
        assert y == pytest.approx(float(np.median([p["overhead_pct"] for p in pts if p["run_id"] == run])))
    assert list(exact.x) == sorted({p["seq_len"] for p in committed.points if option_of(p) == EXACT})
    assert any(s["y0"] == 11.0 for s in fig.layout.shapes)  # the budget line


def test_overhead_figure_draws_only_the_chosen_benchmark_configurations(committed):
    names = [tr.name for tr in figures.overhead_figure([], committed.bench_select, options={(64, 0), (64, 16)}).data]
    assert "kernel benchmark (best tile)" in names
    assert "kernel benchmark, estimate_rows=16 (changes the mask)" in names
    assert not [n for n in names if "block_q=128" in n or "estimate_rows=8" in n]
    everything = [tr.name for tr in figures.overhead_figure([], committed.bench_select).data]
    assert any("block_q=128" in n for n in everything) and any("estimate_rows=8" in n for n in everything)


def test_estimate_options_are_separate_series(committed):
    run = next(p["run_id"] for p in committed.points if p.get("estimate_rows") is None)
    exact = [p for p in committed.points if p.get("estimate_rows") is None and p["error"] is None and p["run_id"] == run]
    sampled = [p | {"estimate_rows": 16, "overhead_pct": p["overhead_pct"] / 4, "speedup": 1.5 * p["speedup"]}
               for p in exact]
    fig = figures.overhead_figure(exact + sampled)
    tau = exact[0]["threshold"]
    by_name = {tr.name: tr for tr in fig.data}
    a, b = by_name["sweep, exact estimate"], by_name["sweep, estimate_rows=16"]
    assert list(b.y) == pytest.approx([y / 4 for y in a.y])
    speed = {tr.name: tr for tr in figures.speedup_figure(exact + sampled).data}
    assert list(speed[f"tau={tau:g}, estimate_rows=16"].y) == pytest.approx([1.5 * y for y in speed[f"tau={tau:g}"].y])
    only16 = figures.breakdown_figure(exact + sampled, tau, option=(64, 16))
    assert "estimate_rows=16" in only16.layout.title.text
    assert len(next(tr for tr in only16.data if tr.name == "select").y) == len([p for p in exact if p["threshold"] == tau])


def test_efficiency_figure_draws_the_int8_option_apart():
    rec = lambda n, d, eff, int8=None: {"kind": "sparse_at_density", "seq_len": n, "run_id": "r", "time": "t",
                                        "mask_source": "structured", "density": d, "efficiency": eff,
                                        "best_tile": "default", **({} if int8 is None else
                                        {"int8_efficiency": int8, "int8_best_tile": "split_s2_lp:int8"})}
    rows = [rec(65536, 1.0, 0.79, 0.95), rec(65536, 0.25, 0.67, 0.75), rec(16384, 1.0, 0.83)]
    by_name = {tr.name: tr for tr in figures.efficiency_figure(rows).data}
    assert set(by_name) == {"N=65536, structured masks", "N=65536, structured masks, int8 q.k",
                            "N=16384, structured masks"}
    assert list(by_name["N=65536, structured masks, int8 q.k"].y) == pytest.approx([0.75, 0.95])
    assert list(by_name["N=65536, structured masks"].y) == pytest.approx([0.67, 0.79])


def test_estimate_tradeoff_figure_and_rows():
    rows = [{"schema": "sale-estimate-tradeoff/1", "model": "m", "seq_len": 4096, "layer": 2, "head": h,
             "estimate_rows": opt, "threshold": tau, "density": d, "rel_l1_vs_dense": e, "recall_mean": 0.99,
             "recall_min": 0.9 - h / 10, "candidate_recall_vs_exact": 1.0 if opt is None else 0.7}
            for h in (0, 1) for opt, scale in ((None, 1.0), (16, 0.8))
            for tau, d, e in ((0.001, 0.6 * scale, 0.01 * (h + 1)), (0.01, 0.3 * scale, 0.05 * (h + 1)))]
    fig = figures.estimate_tradeoff_figure(rows)
    names = [tr.name for tr in fig.data]
    assert names == ["m N=4096: exact estimate", "m N=4096: estimate_rows=16"]
    assert list(fig.data[1].x) == pytest.approx([0.48, 0.24]) and list(fig.data[1].y) == pytest.approx([0.015, 0.075])
    table = figures.estimate_tradeoff_rows(rows)
    assert len(table) == 4 and all(r["heads"] == 2 for r in table)
    r16 = next(r for r in table if r["estimate_rows"] == 16 and r["threshold"] == 0.01)
    assert r16["density"] == pytest.approx(0.24) and r16["recall_min"] == pytest.approx(0.8)


def test_speed_error_figure_and_matched_table(committed):
    with_options = [p for p in committed.points if option_of(p) != EXACT]
    assert with_options, "the committed traces include sweeps over other configurations"
    n = max(p["seq_len"] for p in with_options)
    fig = figures.speed_error_figure(committed.points, n)
    names = [tr.name for tr in fig.data]
    assert names[0] == "exact estimate" and set(names[1:]) == {option_label(option_of(p)) for p in with_options
                                                               if p["seq_len"] == n}
    for tr in fig.data:
        assert list(tr.x) == sorted(tr.x)  # each line runs along increasing error
    rows = figures.matched_error_rows(committed.points)
    assert {r["seq_len"] for r in rows} >= {p["seq_len"] for p in with_options}


def test_breakdown_stacks_the_stages(committed):
    tau, run = committed.points[0]["threshold"], committed.points[0]["run_id"]
    fig = figures.breakdown_figure(committed.points, tau, run_id=run)
    q, s, a = (next(tr for tr in fig.data if tr.name == n) for n in ("quantize", "select", "attend"))
    assert list(a.base) == pytest.approx([qq + ss for qq, ss in zip(q.y, s.y)])
    norm = figures.breakdown_figure(committed.points, tau, normalize=True, run_id=run)
    pts = sorted((p for p in committed.points if p["threshold"] == tau and p["run_id"] == run), key=lambda p: p["seq_len"])
    assert len({p["seq_len"] for p in pts}) == len(pts)
    latest = figures.breakdown_figure(committed.points, tau)  # default: the latest run with that series
    assert len(next(tr for tr in latest.data if tr.name == "quantize").y) == len(
        {p["seq_len"] for p in committed.points if p["threshold"] == tau and p.get("estimate_rows") is None
         and p["run_id"] == max((x for x in committed.points if x["threshold"] == tau and x.get("estimate_rows") is None),
                                key=lambda x: x["time"])["run_id"]})
    assert list(next(tr for tr in norm.data if tr.name == "quantize").y) == pytest.approx(
        [100 * p["quantize_ms"] / p["dense_ms"] for p in pts])


def test_whatif_and_pooling():
    always = np.zeros((4, 8), dtype=np.uint8)
    always[:, 0] = 1
    cand = np.tril(np.ones((4, 8), dtype=np.uint8), k=3) & ~always.astype(bool)
    scores = np.full((4, 8), -np.inf)
    scores[cand.astype(bool)] = np.linspace(-8, 0, int(cand.sum()))
    arrays = {"always": always, "candidate": cand.astype(np.uint8), "head0.log_ras": scores}
    causal = int((always | cand).sum())
    assert figures.whatif_density(arrays, 0, 0.0) == 1.0
    assert figures.whatif_density(arrays, 0, 10.0) == pytest.approx(always.sum() / causal)
    kept = figures.kept_blocks(arrays, 0, math.exp(-4))
    assert kept.sum() == always.sum() + (scores > -4).sum()
    big = np.arange(1000 * 600, dtype=float).reshape(1000, 600)
    pooled = figures.pool(big)
    assert pooled.shape[0] <= 256 and pooled.shape[1] <= 256 and pooled.max() == big.max()


def test_compare_runs_deltas():
    base = {"error": None, "sale_ms": 10.0, "dense_ms": 20.0, "speedup": 2.0, "density": 0.3, "threshold": 0.01}
    a = [dict(base, seq_len=4096, run_id="a")]
    b = [dict(base, seq_len=4096, run_id="b", sale_ms=8.0, speedup=2.5)]
    (row,) = figures.compare_runs(a, b)
    assert row["sale_delta_pct"] == pytest.approx(-20.0) and row["speedup_b"] == 2.5


def _corrupt_folder(tmp_path, committed_point):
    (tmp_path / "good.jsonl").write_text(json.dumps({k: v for k, v in committed_point.items() if k != "_file"}) + "\n")
    (tmp_path / "torn.jsonl").write_text('{"schema": "sale-trace/1", "kind": "point", "run_id": "x"\n')
    (tmp_path / "old.jsonl").write_text(json.dumps({**committed_point, "schema": "sale-trace/0"}) + "\n")
    (tmp_path / "maps.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "thresholds_bad.json").write_text("{")
    return tmp_path


def test_bad_files_are_reported_and_the_rest_loads(tmp_path, committed):
    folder = _corrupt_folder(tmp_path, committed.points[0])
    ts = load_folder(str(folder))
    assert len(ts.points) == 1 and len(ts.problems) == 4
    joined = "\n".join(ts.problems)
    assert "torn.jsonl:1" in joined and "sale-trace/0 is not supported" in joined
    assert "maps.safetensors" in joined and "thresholds_bad.json" in joined
    empty = load_folder(str(tmp_path / "nothing"))
    assert empty.empty and "no such folder" in empty.problems[0]


def _app(folder, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("SALE_TRACES", folder)  # the app's default trace folder, for every rerun
    if "SALE_RUNS" not in os.environ:           # a developer's own runs/ stays out of these pages' checks
        monkeypatch.setenv("SALE_RUNS", os.path.join(folder, "no-runs-here"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    return at


@pytest.mark.parametrize("page", PAGES)
def test_each_page_runs_on_committed_traces(page, monkeypatch):
    at = _app(TRACES, monkeypatch)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title and not at.error


@pytest.mark.parametrize("page", PAGES)
def test_each_page_runs_on_a_corrupt_folder(tmp_path, committed, page, monkeypatch):
    at = _app(str(_corrupt_folder(tmp_path, committed.points[0])), monkeypatch)
    # the entry script (run first) names each bad file in the sidebar; the good point still loads
    warnings = [w.value for w in at.sidebar.warning]
    assert len(warnings) == 4 and any("torn.jsonl:1" in w for w in warnings)
    assert "1 sweep points" in at.sidebar.caption[0].value
    at.switch_page(page)  # AppTest runs the page itself on the loaded traces
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# each page's address (st.Page's default: the file's name) and what shows it has drawn: a chart, or for the Runs
# page (tables of two runs side by side) a table
_TABLE_DRAWN = "!!document.querySelector('[data-testid=\"stDataFrame\"] canvas')"
BROWSER_PAGES = {"": None, "breakdown": None, "attention_maps": None, "thresholds": None, "methods": None,
                 "peers": None, "runs": _TABLE_DRAWN}
# what a page must not show: a Python exception, an error box, a table wider than its frame (clipped)
PAGE_PROBLEMS = """JSON.stringify({
  exceptions: document.querySelectorAll('[data-testid="stException"]').length,
  errors: document.querySelectorAll('[data-testid="stAlertContentError"]').length,
  clipped: [...document.querySelectorAll('[data-testid="stDataFrame"]')].filter(
      f => f.getBoundingClientRect().right > document.documentElement.clientWidth + 1).length})"""


def test_real_browser_renders_every_page():
    """Opens each page of the running app in headless Debian chromium and waits (DevTools protocol, up to 60 s a
    page) for a drawn Plotly chart; no page shows an exception, an error box or a table past the window's edge;
    keeps a screenshot of each in tests/artifacts/. CI installs chromium (.ci/run)."""
    from dashboard.bench_cold_start import first_chart
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("needs Debian's chromium for a real browser (apt-get install chromium; CI installs it)")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        artifacts = os.path.join(ROOT, "tests", "artifacts")
        os.makedirs(artifacts, exist_ok=True)
        for page, ready in BROWSER_PAGES.items():
            shot = os.path.join(artifacts, f"dashboard_{page or 'overview'}.png")
            *_, problems = first_chart(chromium, f"http://127.0.0.1:{port}/{page}", time.perf_counter(),
                                       screenshot=shot, probe=PAGE_PROBLEMS,
                                       **({"ready": ready} if ready else {}))   # raises if not drawn in 60 s
            assert json.loads(problems) == {"exceptions": 0, "errors": 0, "clipped": 0}, (page, problems)
            with open(shot, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", page
    finally:
        server.terminate()
        server.wait(timeout=20)


def _damaged_folder(tmp_path, committed):
    """One good record of each kind beside damaged copies: strings for numbers, NaN, negatives, missing
    fields, wrong types, ragged thresholds, a maps file with bad metadata."""
    def strip(r):
        return {k: v for k, v in r.items() if k != "_file"}
    sel, att = strip(committed.bench_select[-1]), strip(committed.bench_attend[-1])
    acc, tr = strip(committed.accuracy[0]), strip(committed.estimate_tradeoff[0])
    lines = {
        "select.jsonl": [sel, {**sel, "select_ms": "fast"}, {**sel, "seq_len": "64K"},
                         {**sel, "fastest_dense_ms": -1.0}, {k: v for k, v in sel.items() if k != "quantize_ms"},
                         {**sel, "select_ms": {"default": float("nan")}}],
        "attend.jsonl": [att, {**att, "seq_len": 0}, {**att, "gpu": 7}, {k: v for k, v in att.items() if k != "kind"}],
        "accuracy.jsonl": [acc, {**acc, "density": "half"}, {**acc, "theta": float("inf")},
                           {**acc, "kind": "needle", "sale_correct": "yes"}],
        "tradeoff.jsonl": [tr, {**tr, "recall_mean": [0.5]}, {**tr, "density": -0.2}],
    }
    for name, recs in lines.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in recs))
    good_t = next(iter(committed.thresholds.values()))
    (tmp_path / "thresholds_ragged.json").write_text(json.dumps({**good_t, "thresholds": [[0.1, 0.2], [0.1]]}))
    (tmp_path / "thresholds_negative.json").write_text(json.dumps({**good_t, "thresholds": [[0.1, -0.2]]}))
    from safetensors.numpy import save
    meta = json.dumps({"schema": "sale-maps/1", "seq_len": "long", "block_q": 64, "block_k": 32, "heads": [0]})
    (tmp_path / "maps_bad.safetensors").write_bytes(save({"x": np.zeros(2, np.float32)}, metadata={"sale": meta}))
    return tmp_path


def test_damaged_records_are_skipped_and_named(tmp_path, committed):
    ts = load_folder(str(_damaged_folder(tmp_path, committed)))
    assert len(ts.bench_select) == 1 and len(ts.bench_attend) == 1
    assert len(ts.accuracy) == 1 and len(ts.estimate_tradeoff) == 1
    assert not ts.thresholds and not ts.maps
    joined = "\n".join(ts.problems)
    for where in ("select.jsonl:2", "select.jsonl:3", "select.jsonl:4", "select.jsonl:5", "select.jsonl:6",
                  "attend.jsonl:2", "attend.jsonl:3", "attend.jsonl:4", "accuracy.jsonl:2", "accuracy.jsonl:3",
                  "accuracy.jsonl:4", "tradeoff.jsonl:2", "tradeoff.jsonl:3", "thresholds_ragged.json",
                  "thresholds_negative.json", "maps_bad.safetensors"):
        assert where in joined, where
    assert len(ts.problems) == 16


@pytest.mark.parametrize("page", PAGES)
def test_each_page_runs_on_a_damaged_folder(tmp_path, committed, page, monkeypatch):
    at = _app(str(_damaged_folder(tmp_path, committed)), monkeypatch)
    warnings = [w.value for w in at.sidebar.warning]
    assert len(warnings) == 16 and any("select.jsonl:2" in w for w in warnings)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_verdict_comes_from_the_newest_default_run(committed):
    v = figures.verdict(committed.bench_attend, committed.bench_select)
    e2e = [r for r in committed.bench_attend if r.get("kind") == "sale_end_to_end" and r["threshold"] == 0.01
           and not r.get("int8_qk") and r.get("estimate_rows") in (None, 0) and r.get("block_q", 64) == 64
           and r.get("head_dim", 128) == 128 and r.get("num_q_heads", 32) == 32]
    newest = max(e2e, key=lambda r: r["time"])
    assert v["time"][:10] == newest["time"][:10] and v["seq_len"] == 65536
    rec = next(r for r in e2e if r["run_id"] == newest["run_id"] and r["seq_len"] == 65536)
    assert v["speedup"] == rec["speedup"] and f"{rec['speedup']:.2f}x faster" in v["sentence"]
    assert f"{100 * rec['rel_l1_vs_dense']:.1f}% output error" in v["sentence"]
    slower = [{**rec, "speedup": 0.5, "time": "2099-01-01", "run_id": "z"}]
    assert "2.00x slower" in figures.verdict(slower, [])["sentence"]
    assert figures.verdict([], []) is None
    assert figures.verdict([{**rec, "gpu": "cpu"}], []) is None    # CPU runs never make the headline


def test_overview_opens_on_the_verdict(monkeypatch):
    at = _app(TRACES, monkeypatch)
    assert not at.exception
    assert at.info and "SALE with its exact estimate is" in at.info[0].value


def test_runs_page_defaults_to_a_comparable_pair_labelled_for_people(committed, monkeypatch):
    runs = figures.runs(committed.points)
    a, b = figures.comparable_pair(runs)
    assert figures.compare_runs(runs[a], runs[b])          # the default pair shares points
    label = figures.run_label(runs[a])
    assert label[:4] == "2026" and "·" in label and runs[a][0]["run_id"][:6] in label
    at = _app(TRACES, monkeypatch)
    at.switch_page("views/runs.py")
    at.run()
    assert not at.exception and at.selectbox[0].value == a and at.selectbox[1].value == b


def test_thresholds_page_opens_on_a_calibrated_file(monkeypatch):
    at = _app(TRACES, monkeypatch)
    at.switch_page("views/thresholds.py")
    at.run()
    assert not at.exception and "control" not in at.selectbox[0].value


def test_breakdown_axis_is_linear(committed):
    fig = figures.breakdown_figure(committed.points, committed.points[0]["threshold"])
    assert fig.layout.yaxis.type in (None, "linear")


def test_runs_folder_is_read_beside_the_traces_and_labelled(tmp_path, committed, monkeypatch):
    runs = tmp_path / "runs"
    runs.mkdir()
    point = {k: v for k, v in committed.points[0].items() if k != "_file"}
    (runs / "sweep.jsonl").write_text(json.dumps({**point, "run_id": "mine"}) + "\n")
    ts = load_folder(TRACES, extra={"runs": str(runs)})
    mine = [p for p in ts.points if p["run_id"] == "mine"]
    assert len(mine) == 1 and mine[0]["_file"] == "runs/sweep.jsonl"
    assert len(ts.points) == len(committed.points) + 1 and not ts.problems
    monkeypatch.setenv("SALE_RUNS", str(runs))
    at = _app(TRACES, monkeypatch)
    assert not at.exception
    assert any("1 records from runs/" in c.value for c in at.sidebar.caption)


def _methods_records():
    recs = []
    for method, knob_name, knobs in (("sale", "tau", [0.01, 0.03]), ("pooled", "mass", [0.9, 0.99])):
        for i, knob in enumerate(knobs):
            recs.append({"schema": "sale-bench-methods/1", "run_id": "r1", "time": "2026-12-02T00:00:00", "gpu": "x",
                         "source": "structured", "seq_len": 4096, "method": method, "knob": knob,
                         "knob_name": knob_name, "select_ms": 1.0, "attend_ms": 2.0 - i, "density": 0.5 - 0.1 * i,
                         "speedup": 1.2 + i, "rel_l1": 0.05 * (i + 1), "rel_l2": 0.04, "recall": 0.97, "error": None,
                         "dense_ms": 4.0})
    return recs


def test_methods_page_draws_each_method_through_its_knob(tmp_path, monkeypatch):
    (tmp_path / "bench_methods.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _methods_records()))
    ts = load_folder(str(tmp_path))
    assert len(ts.bench_methods) == 4 and not ts.problems
    fig = figures.methods_figure(ts.bench_methods, "structured", 4096)
    assert sorted(tr.name for tr in fig.data) == ["pooled", "sale"]
    sale_line = next(tr for tr in fig.data if tr.name == "sale")
    assert list(sale_line.y) == [1.2, 2.2] and list(sale_line.x) == [0.05, 0.1]
    masks = figures.methods_figure(ts.bench_methods, "structured", 4096, masks_only=True)
    assert list(next(tr for tr in masks.data if tr.name == "sale").y) == [2.0, 4.0]   # dense 4 ms / attend 2, 1 ms
    at = _app(str(tmp_path), monkeypatch)
    at.switch_page("views/methods.py")
    at.run()
    assert not at.exception and at.title[0].value.startswith("Selection methods")


def _peers_records():
    recs = []
    for i, density in enumerate((1.0, 0.25)):
        recs.append({"schema": "sale-bench-peers/1", "run_id": "p1", "time": f"2026-12-03T00:00:0{i}", "gpu": "x",
                     "seq_len": 8192, "mask_grain": "128x128", "target_density": density, "density": density,
                     "project_ms": 2.0 * density, "cudnn_ms": 2.5, "peers_ms": {"flex": 3.0 * density},
                     "peers_errors": {"cudnn_bsa": "ModuleNotFoundError: No module named 'cudnn'"},
                     "max_abs_diff": {"flex": 0.004}, "max_abs_err": {"project": 0.003, "flex": 0.004},
                     "best_peer": "flex", "best_peer_ms": 3.0 * density})
    return recs


def test_peers_page_draws_ours_and_each_peer_against_density(tmp_path, monkeypatch):
    recs = _peers_records()
    bad = dict(recs[0], peers_ms={"flex": -1.0})
    (tmp_path / "bench_peers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*recs, bad]))
    ts = load_folder(str(tmp_path))
    assert len(ts.bench_peers) == 2 and len(ts.problems) == 1 and "peers_ms" in ts.problems[0]
    fig = figures.peers_figure(ts.bench_peers, 8192, "128x128", "ms")
    ours = next(tr for tr in fig.data if tr.name.startswith("ours"))
    assert list(ours.x) == [0.25, 1.0] and list(ours.y) == [0.5, 2.0] and ours.line.width == 5
    dense = next(tr for tr in fig.data if tr.name == "cuDNN dense")
    assert list(dense.y) == [2.5, 2.5] and list(dense.x) == [0.25, 1.0]
    assert not fig.layout.annotations   # an annotation on a log axis would read its y as an exponent
    eff = figures.peers_figure(ts.bench_peers, 8192, "128x128", "efficiency")
    flex = next(tr for tr in eff.data if tr.name.startswith("FlexAttention"))
    assert list(flex.y) == pytest.approx([0.25 * 2.5 / 0.75, 2.5 / 3.0])
    at = _app(str(tmp_path), monkeypatch)
    at.switch_page("views/peers.py")
    at.run()
    assert not at.exception and at.title[0].value.startswith("Block-sparse kernels")


def test_methods_page_tables_the_real_model_comparison(tmp_path, monkeypatch):
    (tmp_path / "bench_methods.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _methods_records()))
    recs = []
    for method, knob in (("sale", 0.01), ("pooled", 0.9)):
        base = {"schema": "sale-accuracy/1", "model": "m", "backend": "reference", "time": "2026-12-03T01:00:00",
                "selection": method, "knob_name": "tau" if method == "sale" else "mass", "knob": knob, "theta": None,
                "budget": 0.05, "calibration_error": 0.04, "calibration_density": 0.5, "calibration_len": 2048}
        recs += [base | {"kind": "needle", "seq_len": 2048, "depth": 0.5, "density": 0.5, "dense_correct": True,
                         "sale_correct": method == "sale", "dense_answer_logprob": -0.1, "sale_answer_logprob": -0.2},
                 base | {"kind": "held_out", "seq_len": 2048, "density": 0.45, "next_token_agreement": 0.97,
                         "kl_dense_sale": 0.01, "perplexity_dense": 7.0, "perplexity_sale": 7.1}]
    (tmp_path / "accuracy_methods.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    ts = load_folder(str(tmp_path))
    assert len(ts.accuracy) == 4 and not ts.problems
    at = _app(str(tmp_path), monkeypatch)
    at.switch_page("views/methods.py")
    at.run()
    assert not at.exception
    assert any(h.value.startswith("At equal accuracy") for h in at.header)
    frame = at.dataframe[-1].value
    assert list(frame["method"]) == ["pooled", "sale"] and list(frame["needles found"]) == ["0 / 1 (dense 1)", "1 / 1 (dense 1)"]
