"""The sweep over several GPUs: the worker protocol, with CPU processes standing in for GPUs."""
import os

import pytest

from profiler import trace
from profiler.sweep_gpus import deal, parse_gpus, sweep_on_devices

KW = dict(backend="reference", num_q_heads=2, num_kv_heads=1, head_dim=32, dtype="fp32", reps=1, warmup=0,
          accuracy_max_len=0)


def test_parse_and_deal():
    assert parse_gpus("all", 3) == [0, 1, 2] and parse_gpus("2,0", 3) == [2, 0]
    for bad, msg in (("0,5", "this machine has 3"), ("a,b", "comma-separated"), ("1,1", "distinct"), ("", "distinct")):
        with pytest.raises(ValueError, match=msg):
            parse_gpus(bad, 3)
    with pytest.raises(ValueError, match="none is visible"):
        parse_gpus("all", 0)
    shares = deal([1024, 2048, 4096, 8192], 2)
    assert sorted(sum(shares, [])) == [1024, 2048, 4096, 8192] and shares[0][0] == 8192 and 4096 in shares[1]


def test_workers_share_one_trace_file_and_run(tmp_path):
    out = str(tmp_path / "s.jsonl")
    records = sweep_on_devices(["cpu", "cpu"], [96, 160, 130], [0.01, 0.1], out_path=out, **KW)
    points = [r for r in records if r["kind"] == "point"]
    assert len(points) == 6 and all(r["error"] is None for r in points)
    assert len({r["run_id"] for r in records}) == 1
    on_disk, problems = trace.read(out)
    assert not problems and len(on_disk) == 7 and on_disk[-1]["kind"] == "summary"
    assert sorted((r["seq_len"], r["threshold"]) for r in on_disk[:-1]) == sorted(
        (n, t) for n in (96, 130, 160) for t in (0.01, 0.1))


def _dying_worker(slot, device, lengths, thresholds, kwargs, run_id, messages):
    from profiler.sweep_gpus import _worker
    if 160 in lengths:        # this "GPU" dies before finishing its points
        os._exit(3)
    _worker(slot, device, lengths, thresholds, kwargs, run_id, messages)


def test_a_dead_worker_records_why_and_the_others_go_on(tmp_path):
    out = str(tmp_path / "s.jsonl")
    records = sweep_on_devices(["cpu", "cpu"], [96, 160], [0.01], out_path=out, worker=_dying_worker, **KW)
    points = {r["seq_len"]: r for r in records if r["kind"] == "point"}
    assert points[96]["error"] is None
    assert "died (exit code 3)" in points[160]["error"]
    on_disk, problems = trace.read(out)
    assert not problems and on_disk[-1]["failed_points"] == 1


def test_sweep_cli_checks_gpus_before_any_point(tmp_path, capsys):
    import torch

    from profiler.__main__ import main
    out = str(tmp_path / "s.jsonl")
    count = torch.cuda.device_count()
    assert main(["sweep", "--gpus", str(count + 1), "--out", out]) == 2
    assert "--gpus" in capsys.readouterr().err and not os.path.exists(out)
    assert main(["sweep", "--gpus", "all", "--device", "cpu", "--out", out]) == 2
    assert not os.path.exists(out)
