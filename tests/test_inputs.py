"""Bad input is refused up front with a message naming the argument; records are never lost."""
import json
import math
import multiprocessing
import os

import pytest
import torch

import sale
from sale._io import append_line
from sale.calibrate import calibrate, calibrate_head, load_thresholds, read_thresholds_file

HAS_CUDA = torch.cuda.is_available()


# ---- trace writing -------------------------------------------------------------------------------------------

def _writer(path, tag, n):
    for i in range(n):
        append_line(path, json.dumps({"writer": tag, "i": i, "pad": "x" * 200}))


def test_concurrent_writers_lose_no_record(tmp_path):
    path = str(tmp_path / "t.jsonl")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, tag, 200)) for tag in ("a", "b", "c")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    records = [json.loads(line) for line in open(path)]
    assert len(records) == 600
    for tag in "abc":
        assert sorted(r["i"] for r in records if r["writer"] == tag) == list(range(200))


def test_append_writes_in_place_and_isolates_a_torn_line(tmp_path):
    path = tmp_path / "t.jsonl"
    append_line(str(path), '{"a": 1}')
    inode = os.stat(path).st_ino
    with open(path, "a") as f:          # a writer killed mid-line
        f.write('{"b": ')
    append_line(str(path), '{"c": 3}')
    assert os.stat(path).st_ino == inode          # appended, not rewritten and renamed
    assert path.read_text().splitlines() == ['{"a": 1}', '{"b": ', '{"c": 3}']
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []
    with pytest.raises(ValueError, match="one line"):
        append_line(str(path), "two\nlines")


def test_trace_reader_skips_a_torn_line(tmp_path):
    from profiler import trace
    path = tmp_path / "t.jsonl"
    path.write_text('{"schema": "sale-trace/1", "kind": "summary", "run_id": "x", "break_even": {}}\n{"sch')
    records, problems = trace.read(str(path))
    assert len(records) == 1 and len(problems) == 1 and ":2:" in problems[0]


# ---- command-line arguments ------------------------------------------------------------------------------------

def _profiler(*args):
    from profiler.__main__ import main
    return main(list(args))


def _sale(*args):
    from sale.__main__ import main
    return main(list(args))


@pytest.mark.parametrize("value", ["-0.01", "nan", "inf", "abc"])
def test_sweep_refuses_bad_thresholds_before_any_point(value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        _profiler("sweep", "--thresholds", value, "--out", str(tmp_path / "s.jsonl"))
    assert exc.value.code == 2
    assert "--thresholds" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize("args, named", [(["--reps", "0"], "--reps"), (["--kv-heads", "0"], "--kv-heads"),
                                         (["--lengths", "0"], "--lengths"), (["--warmup", "-1"], "--warmup")])
def test_sweep_refuses_bad_counts(args, named, capsys):
    with pytest.raises(SystemExit):
        _profiler("sweep", *args)
    assert named in capsys.readouterr().err


def test_sweep_refuses_an_output_folder_and_bad_devices(tmp_path, capsys):
    assert _profiler("sweep", "--out", str(tmp_path)) == 2
    assert "--out must name a file" in capsys.readouterr().err
    assert _profiler("sweep", "--device", "bogus", "--out", str(tmp_path / "s.jsonl")) == 2
    assert "--device takes cpu or cuda" in capsys.readouterr().err
    if not HAS_CUDA:
        assert _profiler("sweep", "--device", "cuda", "--out", str(tmp_path / "s.jsonl")) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert _profiler("sweep", "--out", str(blocked / "s.jsonl")) == 2    # its folder would be a file
    assert "cannot create its folder" in capsys.readouterr().err


def test_sweep_writes_to_runs_by_default():
    from profiler.__main__ import main  # noqa: F401  (the default lives in the parser)
    import argparse
    import profiler.__main__ as pm
    parser_defaults = {}
    orig = argparse.ArgumentParser.parse_known_args

    def spy(self, args=None, namespace=None):
        ns, rest = orig(self, args, namespace)
        parser_defaults.update(vars(ns))
        raise SystemExit(0)
    argparse.ArgumentParser.parse_known_args = spy
    try:
        with pytest.raises(SystemExit):
            pm.main(["sweep"])
    finally:
        argparse.ArgumentParser.parse_known_args = orig
    assert parser_defaults["out"] == os.path.join("runs", "sweep.jsonl")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message given without a GPU")
@pytest.mark.parametrize("command", ["bench-select", "bench-attend"])
def test_benchmarks_need_a_gpu_and_say_so(command, capsys):
    assert _profiler(command) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["demo", "--q-heads", "3", "--kv-heads", "2"], "must be a multiple of --kv-heads"),
    (["demo", "--device", "bogus"], "--device takes cpu or cuda"),
    (["demo", "--backend", "triton", "--device", "cpu"], None),
])
def test_demo_refuses_bad_arguments(args, message, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert _sale(*args) == 2
    err = capsys.readouterr().err
    assert (message or "needs a CUDA GPU") in err


# ---- thresholds files -------------------------------------------------------------------------------------------

GOOD = {"schema": "sale-thresholds/1", "theta": 0.4, "method": "halving", "thresholds": [[0.01, 0.0], [0.002, 0.03]]}


@pytest.mark.parametrize("doc, message", [
    ("not json", "not JSON"),
    ([1, 2], "holds a JSON object"),
    (None, "holds a JSON object"),
    ({**GOOD, "schema": "other/1"}, "schema must be"),
    ({k: v for k, v in GOOD.items() if k != "thresholds"}, "'thresholds' must be a non-empty list"),
    ({k: v for k, v in GOOD.items() if k != "theta"}, "'theta' must be a number > 0"),
    ({**GOOD, "thresholds": ["0.1", [0.1, 0.2]]}, r"thresholds\[0\] must be a non-empty list"),
    ({**GOOD, "thresholds": [[0.1, 0.2], [0.1]]}, r"thresholds\[1\] has 1 heads"),
    ({**GOOD, "thresholds": [[0.1, -0.2]]}, r"thresholds\[0\]\[1\] must be a number >= 0"),
    ({**GOOD, "thresholds": [[0.1, "0.2"]]}, r"thresholds\[0\]\[1\] must be a number >= 0"),
    ({**GOOD, "thresholds": [[0.1, True]]}, r"thresholds\[0\]\[1\] must be a number >= 0"),
])
def test_thresholds_files_are_checked_whole_naming_file_and_entry(tmp_path, doc, message):
    path = tmp_path / "t.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(ValueError, match=message) as exc:
        load_thresholds(str(path))
    assert str(path) in str(exc.value)


def test_thresholds_nan_and_model_layout(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(GOOD).replace("0.002", "NaN"))
    with pytest.raises(ValueError, match=r"thresholds\[1\]\[0\]"):
        read_thresholds_file(str(path))
    path.write_text(json.dumps(GOOD))
    with pytest.raises(ValueError, match="for 2 layers, the model has 30"):
        read_thresholds_file(str(path), num_layers=30)
    with pytest.raises(ValueError, match="2 thresholds per layer, the model has 9"):
        read_thresholds_file(str(path), num_layers=2, num_heads=9)
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 2\)"):
        load_thresholds(str(path), layer=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_thresholds(str(tmp_path / "missing.json"))
    assert load_thresholds(str(path), layer=1) == [0.002, 0.03]


def test_evaluate_refuses_a_file_for_another_model_before_loading_it(tmp_path, capsys):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(GOOD))
    assert _sale("evaluate", "--thresholds", str(path), "--device", "cpu") == 2
    assert "the model has 30" in capsys.readouterr().err


# ---- the API ----------------------------------------------------------------------------------------------------

def test_inputs_on_other_devices_are_named_before_values_are_read():
    q = torch.randn(1, 2, 64, 64)
    with pytest.raises(ValueError, match="k is on the meta device"):
        sale.select_blocks(q, torch.empty(1, 2, 64, 64, device="meta"), 0.01)
    with pytest.raises(ValueError, match="q is on the meta device"):
        sale.select_blocks(torch.empty(1, 2, 64, 64, device="meta"), q, 0.01)


def test_config_flags_and_triton_limits_at_construction():
    with pytest.raises(ValueError, match="check_finite must be True or False"):
        sale.SaleConfig(check_finite="no")
    with pytest.raises(ValueError, match="power of two >= 16 for the triton backend"):
        sale.SaleConfig(backend="triton", block_q=48)
    assert sale.SaleConfig(block_q=48).block_q == 48   # the reference backend takes any block size


def test_calibration_refuses_wrong_head_layouts():
    q = torch.randn(1, 2, 128, 32)
    with pytest.raises(ValueError, match="calibrate_head takes one head"):
        calibrate_head(q, q[:, :1], q[:, :1], 0.4)
    with pytest.raises(ValueError, match="must be a multiple of the number of kv heads"):
        calibrate(torch.randn(1, 3, 128, 32), torch.randn(1, 2, 128, 32), torch.randn(1, 2, 128, 32), 0.4)


def test_select_checks_that_the_quantization_belongs_to_q_and_k():
    q, k = torch.randn(1, 2, 128, 64), torch.randn(1, 1, 128, 64)
    quant = sale.quantize(q, k)
    mask = sale.select_blocks(q, k, 0.01, quantized=quant)
    assert torch.equal(mask, sale.select_blocks(q, k, 0.01))
    with pytest.raises(ValueError, match="q_mean does not match"):
        sale.select_blocks(q + 1.0, k, 0.01, quantized=quant)
    with pytest.raises(ValueError, match="quantized.k_hat has shape"):
        sale.select_blocks(q, torch.randn(1, 2, 128, 64), 0.01, quantized=quant)
    with pytest.raises(TypeError, match="quantized must be the QuantizedQK"):
        sale.select_blocks(q, k, 0.01, quantized=(1, 2))


def test_thresholds_negative_or_nan_refused_by_the_api():
    q = torch.randn(1, 2, 64, 64)
    for bad in (-0.01, math.nan, [0.1, -1.0]):
        with pytest.raises(ValueError, match="thresholds must be >= 0"):
            sale.select_blocks(q, q, bad)


def test_calibrate_refuses_layers_the_model_lacks_before_calibrating(monkeypatch, tmp_path, capsys):
    import types

    import sale.smollm
    fake = types.SimpleNamespace(config=types.SimpleNamespace(num_layers=30))
    monkeypatch.setattr(sale.smollm, "load_smollm2", lambda *a, **k: fake)
    for bad in ("99", "-1"):
        assert _sale("calibrate", "--layers", bad, "--device", "cpu", "--out", str(tmp_path / "t.json")) == 2
        assert "--layers takes layers in [0, 30)" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("module, loader", [("sale.smollm", "load_smollm2"), ("sale.gemma3", "load_gemma3")])
def test_real_models_without_transformers_say_how_to_install_it(module, loader, monkeypatch):
    import builtins
    import importlib
    import sys
    real_import = builtins.__import__

    def no_transformers(name, globals=None, locals=None, fromlist=(), level=0):
        if name.split(".")[0] == "transformers":
            raise ImportError("No module named 'transformers'")
        return real_import(name, globals, locals, fromlist, level)
    for name in [m for m in sys.modules if m == "sale.hf" or m.split(".")[0] == "transformers"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", no_transformers)
    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, "gguf_path", lambda: "/nowhere/model.gguf")
    load = getattr(mod, loader).__wrapped__          # past the cache of loaded models
    with pytest.raises(ImportError, match=r"runs through transformers, which is not installed .*\[hf\]"):
        load()
