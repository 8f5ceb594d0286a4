"""The profiler on the CPU: trace schema and atomic writes, the sweep's records, failures recorded,
instrumentation that changes nothing, break-even, and the nsys and torch.profiler parsers."""
import json
import math
import os
import sqlite3

import pytest
import torch

import sale
from profiler import trace
from profiler.capture_torch import capture
from profiler.nsys_parse import stage_breakdown
from profiler.stages import StageTimer, nvtx_range, sale_stages
from profiler.sweep import break_even, sweep
from sale.workloads import make_qkv

REQUIRED = ["schema", "run_id", "git_commit", "time", "gpu", "backend", "workload", "batch", "num_q_heads",
            "num_kv_heads", "head_dim", "dtype", "seq_len", "threshold", "quantize_ms", "select_ms", "attend_ms",
            "sale_ms", "dense_ms", "dense_backend", "density", "overhead_pct", "speedup", "gpu_context"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    path = tmp_path_factory.mktemp("traces") / "sweep.jsonl"
    records = sweep([200, 333], [0.0, 0.05], num_q_heads=4, num_kv_heads=2, head_dim=64, reps=2,
                    accuracy_max_len=256, out_path=str(path), progress=False)
    return path, records


def test_sweep_records_every_field(swept):
    path, records = swept
    read, problems = trace.read(str(path))
    assert problems == [] and len(read) == 5 and read == records
    points = [r for r in read if r["kind"] == "point"]
    for r in points:
        assert all(name in r for name in REQUIRED)
        assert r["error"] is None
        assert r["quantize_ms"] > 0 and r["select_ms"] > 0 and r["attend_ms"] > 0 and r["dense_ms"] > 0
        assert r["dense_backend"] in r["dense_all_ms"] and set(r["dense_all_ms"]) == {"reference", "sdpa_math"}
        assert r["dense_ms"] == min(r["dense_all_ms"].values())
        assert r["overhead_pct"] == pytest.approx(100 * (r["quantize_ms"] + r["select_ms"]) / r["dense_ms"])
        assert r["speedup"] == pytest.approx(r["dense_ms"] / r["sale_ms"])
        ctx = r["gpu_context"]
        assert {"before", "after", "software"} <= set(ctx) and ctx["software"]["torch"] == torch.__version__
    # tau = 0 is dense; accuracy against the float32 reference only where N <= accuracy_max_len
    dense_points = [r for r in points if r["threshold"] == 0.0]
    assert all(r["density"] == 1.0 for r in dense_points)
    by_n = {(r["seq_len"], r["threshold"]): r for r in points}
    assert by_n[(200, 0.0)]["rel_l1"] < 1e-6 and by_n[(200, 0.0)]["recall_min"] == pytest.approx(1.0)
    assert by_n[(200, 0.05)]["accuracy_reference"] == "float32 reference"
    assert by_n[(333, 0.05)]["accuracy_reference"] == "fastest dense kernel" and by_n[(333, 0.05)]["recall_mean"] is None
    assert read[-1]["kind"] == "summary" and set(read[-1]["break_even"]) == {"0.0", "0.05"}


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    import profiler.sweep as sw
    real = sw.run_point

    def flaky(q, k, v, tau, *args, **kwargs):
        if tau == 0.5:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(q, k, v, tau, *args, **kwargs)
    monkeypatch.setattr(sw, "run_point", flaky)
    path = tmp_path / "t.jsonl"
    records = sw.sweep([150], [0.5, 0.01], num_q_heads=2, num_kv_heads=1, head_dim=64, reps=1,
                       out_path=str(path), progress=False)
    assert [r.get("error") for r in records[:2]][0].startswith("OutOfMemoryError")
    assert records[1]["error"] is None and records[1]["sale_ms"] > 0
    assert records[-1]["failed_points"] == 1
    assert len(trace.read(str(path))[0]) == 3


def test_trace_rejects_bad_records_and_skips_corrupt_lines(tmp_path, swept):
    good = dict(swept[1][0])
    path = tmp_path / "t.jsonl"
    trace.append(str(path), good)
    for bad, match in [({**good, "schema": "sale-trace/0"}, "schema"), ({**good, "seq_len": "4096"}, "seq_len"),
                       ({k: v for k, v in good.items() if k != "density"}, "density"),
                       ({**good, "speedup": float("nan")}, "finite"),
                       ({**good, "estimate_rows": 0}, "estimate_rows"), ({**good, "estimate_rows": "16"}, "estimate_rows")]:
        with pytest.raises(trace.TraceError, match=match):
            trace.append(str(path), bad)
    with open(path, "a") as f:  # a torn line and an old schema, as a crash or an old run would leave
        f.write('{"schema": "sale-trace/1", "kind": "po\n')
        f.write(json.dumps({**good, "schema": "sale-trace/0"}) + "\n")
    trace.append(str(path), good)  # appending after a corrupt line still works
    records, problems = trace.read(str(path))
    assert len(records) == 2 and len(problems) == 2
    assert "t.jsonl:2" in problems[0] and "schema" in problems[1]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".trace-")]  # no temporary files left


def test_append_interrupted_mid_write_keeps_every_finished_point(tmp_path, swept, monkeypatch):
    path = tmp_path / "t.jsonl"
    trace.append(str(path), swept[1][0])
    before = path.read_bytes()
    real_write = os.write

    def torn(fd, data):   # half the line reaches the file, then the writer is killed
        real_write(fd, bytes(data[: len(data) // 2]))
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "write", torn)
    with pytest.raises(KeyboardInterrupt):
        trace.append(str(path), swept[1][1])
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes().startswith(before)   # the finished point is intact
    trace.append(str(path), swept[1][1])          # the next append starts a line of its own
    records, problems = trace.read(str(path))
    assert len(records) == 2 and len(problems) == 1
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def test_instrumentation_changes_nothing():
    q, k, v = make_qkv(num_q_heads=4, num_kv_heads=2, seq_len=300, head_dim=64, dtype=torch.float32, seed=3)
    tau = torch.full((4,), 0.02)
    cfg = sale.SaleConfig(check_finite=False)
    timer = StageTimer("cpu")
    with nvtx_range("point N=300 tau=0.02", 300):
        out_t, mask_t = sale_stages(q, k, v, tau, cfg, timer)
    out_p, mask_p = sale_stages(q, k, v, tau, cfg, None)
    assert torch.equal(out_t, out_p) and torch.equal(mask_t, mask_p)
    assert torch.equal(out_p, sale.sale_attention(q, k, v, tau, cfg))
    assert set(timer.collect()) == {"quantize", "select", "attend"}


def test_break_even_interpolates_in_log_length():
    pts = [{"threshold": 0.01, "seq_len": n, "speedup": s} for n, s in [(4096, 0.5), (8192, 0.8), (16384, 1.2)]]
    pts += [{"threshold": 0.1, "seq_len": n, "speedup": s} for n, s in [(4096, 1.5), (8192, 2.0)]]
    pts += [{"threshold": 0.0, "seq_len": n, "speedup": s} for n, s in [(4096, 0.9), (8192, 0.95)]]
    be = break_even(pts)
    assert 8192 < be["0.01"] < 16384 and be["0.01"] == round(2 ** (13 + 0.5))
    assert be["0.1"] == 4096 and be["0.0"] is None


def _nsys_like_sqlite(path):
    """An SQLite file with the tables and columns nsys documents, holding two stage ranges on one
    thread, one range of another domain, and kernels launched inside and outside them."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE NVTX_EVENTS (start INTEGER NOT NULL, end INTEGER, eventType INTEGER NOT NULL,
            rangeId INTEGER, category INTEGER, color INTEGER, text TEXT, globalTid INTEGER,
            endGlobalTid INTEGER, textId INTEGER, domainId INTEGER, uint64Value INTEGER,
            int64Value INTEGER, doubleValue REAL, uint32Value INTEGER, int32Value INTEGER,
            floatValue REAL, jsonTextId INTEGER, jsonText TEXT);
        CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INTEGER NOT NULL, end INTEGER NOT NULL,
            eventClass INTEGER NOT NULL, globalTid INTEGER, correlationId INTEGER, nameId INTEGER NOT NULL,
            returnValue INTEGER NOT NULL, callchainId INTEGER);
        CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL,
            deviceId INTEGER NOT NULL, contextId INTEGER NOT NULL, streamId INTEGER NOT NULL,
            correlationId INTEGER, globalPid INTEGER, demangledName INTEGER NOT NULL,
            shortName INTEGER NOT NULL, gridX INTEGER, gridY INTEGER, gridZ INTEGER);
    """)
    con.executemany("INSERT INTO StringIds VALUES (?, ?)", [(1, "quantize"), (2, "select"), (3, "point N=4096 tau=0.01"),
                                                           (4, "_select_kernel"), (5, "_quantize_rows_kernel")])
    tid, other = 100, 200
    nvtx = [  # (start, end, eventType, text, globalTid, textId, domainId)
        (0, None, 75, "sale", tid, None, 7), (0, None, 75, "other", tid, None, 8),
        (1000, 9000, 59, None, tid, 3, 7),        # point range (outer)
        (1100, 2000, 59, None, tid, 1, 7),        # quantize
        (2100, 8000, 59, None, tid, 2, 7),        # select
        (2200, 2300, 59, "not ours", tid, None, 8),
        (1100, 8000, 59, "select", other, None, 7),  # same name on another thread: must not capture tid's launches
    ]
    con.executemany("INSERT INTO NVTX_EVENTS (start, end, eventType, text, globalTid, textId, domainId) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", nvtx)
    runtime = [(1200, 1210, 1, tid, 11, 0, 0), (2150, 2160, 1, tid, 12, 0, 0), (2250, 2260, 1, tid, 13, 0, 0),
               (8500, 8510, 1, tid, 14, 0, 0), (9500, 9510, 1, tid, 15, 0, 0)]
    con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", runtime)
    kernels = [(5000, 6000, 11, 5), (6000, 9000, 12, 4), (9000, 9500, 13, 4), (9600, 9700, 14, 4), (9800, 9900, 15, 4)]
    con.executemany("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?, ?, 0, 1, 7, ?, 1, ?, ?, 1, 1, 1)",
                    [(s, e, c, n, n) for s, e, c, n in kernels])
    con.commit()
    con.close()


def test_nsys_parser_attributes_kernels_to_innermost_ranges(tmp_path):
    path = str(tmp_path / "report.sqlite")
    _nsys_like_sqlite(path)
    rows = stage_breakdown(path)
    assert rows["quantize"] == {"kernel_ms": 1000 / 1e6, "kernels": 1, "ranges": 1}
    # launches 12 and 13 happen in select (13 also inside another domain's range, which is ignored)
    assert rows["select"]["kernels"] == 2 and rows["select"]["kernel_ms"] == pytest.approx(3500 / 1e6)
    assert rows["select"]["ranges"] == 2  # ours and the other thread's
    # launch 14 is inside the point range only; launch 15 is outside every range
    assert rows["point N=4096 tau=0.01"]["kernels"] == 1
    assert "not ours" not in rows
    everything = stage_breakdown(path, domain=None)
    assert everything["not ours"]["kernels"] == 1 and everything["select"]["kernels"] == 1


def test_nsys_parser_rejects_other_files(tmp_path):
    path = str(tmp_path / "x.sqlite")
    sqlite3.connect(path).close()
    with pytest.raises(ValueError, match="missing tables"):
        stage_breakdown(path)


def test_torch_profiler_capture_on_cpu(tmp_path):
    s = capture(seq_len=200, threshold=0.02, num_q_heads=2, num_kv_heads=1, head_dim=64, reps=2,
                out_dir=str(tmp_path), device="cpu")
    assert set(s["stages"]) == {"quantize", "select", "attend"}
    assert all(v["calls"] == 2 and v["cpu_ms"] > 0 for v in s["stages"].values())
    with open(s["chrome_trace"]) as f:
        events = json.load(f)["traceEvents"]
    assert any(e.get("name") == "sale::select" for e in events)


def test_sweep_cli_covers_the_product_of_its_options(tmp_path, capsys):
    from profiler.__main__ import main
    out = tmp_path / "cli.jsonl"
    assert main(["sweep", "--lengths", "150", "--thresholds", "0.02", "--q-heads", "2", "--kv-heads", "1",
                 "--head-dim", "64", "128", "--granularity", "per_token", "per_group", "--estimate-rows", "all",
                 "16", "--reps", "1", "--no-progress", "--out", str(out)]) == 0
    records, problems = trace.read(str(out))
    points = [r for r in records if r["kind"] == "point"]
    assert problems == [] and len(points) == 8
    assert {(r["head_dim"], r["granularity"], r["estimate_rows"]) for r in points} == {
        (d, g, e) for d in (64, 128) for g in ("per_token", "per_group") for e in (None, 16)}
    assert sum(r["kind"] == "summary" for r in records) == 8
    # the sampled-rows mask is a subset of the exact one on the same input, so never denser
    dens = {(r["head_dim"], r["granularity"], r["estimate_rows"]): r["density"] for r in points}
    assert all(dens[(d, g, 16)] <= dens[(d, g, None)] for d in (64, 128) for g in ("per_token", "per_group"))
    assert "break-even length per threshold" in capsys.readouterr().out


def test_speedup_at_matched_error_interpolates_along_each_option():
    from profiler.analysis import speedup_at_matched_error

    def pt(n, rows, tau, l1, speedup, t="2026-01-01"):
        return {"seq_len": n, "estimate_rows": rows, "threshold": tau, "rel_l1": l1, "speedup": speedup,
                "density": 0.5, "error": None, "time": t}
    points = [pt(4096, None, 0.01, 0.02, 1.0), pt(4096, None, 0.03, 0.08, 1.5),
              pt(4096, 16, 0.001, 0.01, 1.2), pt(4096, 16, 0.01, 0.04, 2.0),
              pt(4096, 8, 0.001, 0.05, 3.0), pt(4096, 8, 0.01, 0.2, 4.0),
              pt(4096, None, 0.03, 0.08, 1.6, t="2026-02-01")]  # a later run of the same point counts
    rows = speedup_at_matched_error(points)
    assert [(r["threshold"], r["speedup"]) for r in rows] == [(0.01, 1.0), (0.03, 1.6)]
    # error 0.02 lies halfway (in log error) between 0.01 and 0.04 on the r=16 curve
    assert rows[0]["estimate_rows=16"] == pytest.approx(1.6)
    assert rows[1]["estimate_rows=16"] is None      # 0.08 is beyond its curve: no extrapolation
    assert rows[0]["estimate_rows=8"] is None and rows[1]["estimate_rows=8"] == pytest.approx(3.0 + 1.0 * (
        math.log(0.08 / 0.05) / math.log(0.2 / 0.05)))


def _sass_loop(*args):
    """`python -m profiler sass-loop ARGS` without a GPU: its stdout and the hot loop's opcode counts."""
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-m", "profiler", "sass-loop", *args], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    ops = {k: int(v) for k, v in (item.split(":") for item in run.stdout.strip().splitlines()[-1].split())}
    return run.stdout, ops


def test_sass_loop_compiles_for_hopper_without_a_gpu():
    """The select kernel's estimate loop compiled for sm_90 by Triton's bundled ptxas: one 8-bit
    tensor-core loop whose per-thread work covers the 128 x 128 tile's 128 elements per thread. The
    default (fp8 operands, the vote keys first) converts no integer and reduces nothing across lanes:
    each thread stores its own flags, one per query block it holds; tile int8 (the vote rows first)
    converts each int32 sum once."""
    ops = {}
    for tile in ("default", "int8"):
        stdout, ops[tile] = _sass_loop("--kernel", "select", "--tile", tile)
        assert "registers" in stdout and "hot loop" in stdout
    assert ops["default"].get("QGMMA", 0) >= 4                # the fp8 estimate is on tensor cores
    assert "I2FP" not in ops["default"] and "SHFL" not in ops["default"]
    assert ops["default"].get("STG", 0) >= 1                  # the flags, stored by each thread
    assert ops["int8"].get("IGMMA", 0) >= 4
    assert ops["int8"]["I2FP"] == 128                         # one int->float conversion per estimate element
    assert "SHFL" not in ops["int8"]


def test_sass_loop_of_the_split_computation_pass():
    """The default computation pass (split form) compiled for sm_90: its first loop walks full pairs,
    each step two TMA copies (K and V of 64 keys) and bf16 tensor-core MMAs, and no score is masked
    (the constant flags of a full pair fold away: no FSEL)."""
    _, ops = _sass_loop("--kernel", "attend")
    assert ops["UTMALDG"] == 2
    assert ops["HGMMA"] >= 8
    assert "FSEL" not in ops


def test_sass_loop_of_the_gluon_computation_pass(tmp_path):
    """The Gluon computation pass (attend_gluon.py, tile gluon_split_p: the Hopper default) compiles for sm_90
    without a GPU and without spills. Its ring steps are 128 keys of any four kept blocks: q . k as 8 MMAs of
    64 x 128 x 16 and p . v as 8 of 64 x 128 x 16, the copies issued by the producer warp (none in the consumers'
    loop); the halved steps' q . k run over 64 keys (64 x 64 x 16 MMAs)."""
    stdout, ops = _sass_loop("--kernel", "attend", "--tile", "gluon_split_p", "--out", str(tmp_path))
    assert "stack 0 B" in stdout
    assert ops["HGMMA"] == 16 and "UTMALDG" not in ops
    sass = open(tmp_path / "attend_gluon_split_p.sass").read()
    assert "HGMMA.64x64x16" in sass and "HGMMA.64x128x16" in sass


def test_sweep_records_block_q_and_the_matched_error_table_keeps_configurations_apart(tmp_path):
    from profiler.analysis import speedup_at_matched_error
    path = tmp_path / "bq.jsonl"
    records = sweep([300], [0.003, 0.03], num_q_heads=2, num_kv_heads=1, head_dim=64, reps=1, block_q=128,
                    accuracy_max_len=512, out_path=str(path), progress=False)
    points = [r for r in records if r["kind"] == "point"]
    assert all(r["block_q"] == 128 and r["error"] is None for r in points)
    assert trace.read(str(path))[1] == []
    exact = sweep([300], [0.003, 0.03], num_q_heads=2, num_kv_heads=1, head_dim=64, reps=1,
                  accuracy_max_len=512, out_path=str(path), progress=False)
    rows = speedup_at_matched_error([r for r in exact + records if r["kind"] == "point"])
    assert rows and all("block_q=128" in r for r in rows)
