"""One way to reproduce the committed traces: presets of commands, run in order on the GPU machine.

    python -m profiler suite --list                       # presets, their commands and the traces they make
    python -m profiler suite --preset select --dry-run    # the commands only
    python -m profiler suite --preset select [--out runs/suite/select] [--gpu-name h200]

Each preset is data (PRESETS): the commands (argv lists, `{out}` the output folder, `{gpu}` the GPU's short name)
and the committed files in traces/ it makes (shell patterns; a .jsonl's .txt beside it is the printed output). Every command runs even if one before it failed; each one's output
goes to {out}/NAME.txt beside its records; the suite exits non-zero if any failed. Copy the outputs into
traces/ deliberately (traces/README.md says which command made each file).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

PY = sys.executable or "python3"
# Llama-3.1-8B attention: 32 query heads, 8 kv heads, head dim 128 (the profiler's defaults)
LENGTHS = ["16384", "32768", "65536", "131072"]

PRESETS = {
    "gpu-tests": {
        "what": "every GPU test (kernels against the reference on 8K-32K, odd lengths, poisoned outputs)",
        "traces": ["h100_gpu_tests*.txt", "h200_gpu_tests.txt", "h200_gpu_tests_select_gluon.txt"],
        "commands": {"gpu_tests": [PY, "-m", "pytest", "-q", "-rs", "tests", "-m", "cuda"]},
    },
    "select": {
        "what": "the estimate's cost (quantize + select) against every dense baseline, 8K-128K, the Triton "
                "default beside the Gluon estimate, estimate_rows 16 and 8, masks against the reference",
        "traces": ["*_bench_select.jsonl", "h100_bench_select_mask_check.jsonl", "h200_bench_select_gluon_turns.jsonl"],
        "commands": {"bench_select": [PY, "-m", "profiler", "bench-select", "--lengths", "8192", *LENGTHS,
                                      "--tiles", "default", "--gluon-tiles", "gluon", "probe_vote_only",
                                      "--estimate-rows", "16", "8", "--out", "{out}/{gpu}_bench_select.jsonl"]},
    },
    "select-estimate-rows": {
        "what": "the exact estimate and SaleConfig(estimate_rows=r), r = 32, 16, 8, 4: time, recall, output error",
        "traces": ["h100_bench_select_estimate_rows.jsonl", "h100_bench_select_estimate_rows.txt"],
        "commands": {"bench_select_estimate_rows": [
            PY, "-m", "profiler", "bench-select", "--tiles", "default", "--gluon-tiles", "--estimate-rows",
            "32", "16", "8", "4", "--out", "{out}/{gpu}_bench_select_estimate_rows.jsonl"]},
    },
    "attend": {
        "what": "the computation pass on SALE's own masks at densities 1 to 0.05 against cuDNN, and SALE end to "
                "end at tau 0.003, 0.01, 0.03, 0.1 (16K-128K)",
        "traces": ["*_bench_attend.jsonl", "h100_bench_attend_gluon_split.jsonl", "h100_bench_attend_gluon.jsonl",
                   "h100_bench_attend_end_to_end.jsonl"],
        "commands": {"bench_attend": [PY, "-m", "profiler", "bench-attend", "--lengths", *LENGTHS,
                                      "--mask-source", "structured", "--qk", "exact", "--tiles", "gluon_split_p",
                                      "default", "--thresholds", "0.003", "0.01", "0.03", "0.1",
                                      "--out", "{out}/{gpu}_bench_attend.jsonl"]},
    },
    "attend-d256": {
        "what": "head dim 256 (Gemma-family): the computation pass against cuDNN on random and SALE's masks, and SALE "
                "end to end, 32K-64K at 32 q / 8 kv heads and 32K at Gemma 3's 4 q / 1 kv head",
        "traces": ["h200_bench_attend_d256*.jsonl", "h200_gpu_tests_d256.txt"],
        "commands": {
            "bench_attend_d256": [PY, "-m", "profiler", "bench-attend", "--lengths", "32768", "65536", "--head-dim",
                                  "256", "--densities", "1", "0.25", "0.1", "--mask-source", "random", "structured",
                                  "--tiles", "default", "gathered", "--thresholds", "0.01", "0.03",
                                  "--out", "{out}/{gpu}_bench_attend_d256.jsonl"],
            "bench_attend_d256_gemma": [PY, "-m", "profiler", "bench-attend", "--lengths", "32768", "--head-dim", "256",
                                        "--q-heads", "4", "--kv-heads", "1", "--densities", "1", "0.25", "0.1",
                                        "--mask-source", "random", "--tiles", "default", "gathered", "--thresholds",
                                        "0.01", "0.03", "--out", "{out}/{gpu}_bench_attend_d256_gemma.jsonl"],
            "gpu_tests_d256": [PY, "-m", "pytest", "-q", "tests/test_triton_kernels.py", "-m", "cuda", "-k", "256"]},
    },
    "attend-int8": {
        "what": "the authors' INT8-QK computation pass beside the exact one, and SALE end to end with both",
        "traces": ["h100_bench_attend_end_to_end.jsonl"],
        "commands": {"bench_attend_int8": [PY, "-m", "profiler", "bench-attend", "--lengths", "16384", "65536",
                                           "--mask-source", "structured", "--tiles", "default", "default:int8",
                                           "--qk", "exact", "int8", "--out", "{out}/{gpu}_bench_attend_int8.jsonl"]},
    },
    "calibrated": {
        "what": "SALE end to end at per-head thresholds calibrated on each length (the authors' halving, theta "
                "0.4 and 2.0), the exact estimate and estimate_rows=16",
        "traces": ["h100_bench_attend_calibrated_halving_theta*.jsonl"],
        "commands": {f"bench_attend_calibrated_theta{theta}": [
            PY, "-m", "profiler", "bench-attend", "--lengths", "65536", "131072", "--densities", "--thresholds",
            "--calibrate-theta", theta, "--calibrate-method", "halving", "--estimate-rows", "all", "16",
            "--out", f"{{out}}/{{gpu}}_bench_attend_calibrated_halving_theta{theta}.jsonl"] for theta in ("0.4", "2.0")},
    },
    "block-q128": {
        "what": "SaleConfig(block_q=128): 128-row mask blocks, the selection and the computation pass",
        "traces": ["h100_bench_attend_bq128.jsonl", "h100_bench_select_bq128.jsonl", "h100_sweep_block_q128.jsonl"],
        "commands": {
            "bench_attend_bq128": [PY, "-m", "profiler", "bench-attend", "--block-q", "128", "--lengths", "16384",
                                   "65536", "131072", "--densities", "1.0", "0.25", "0.1",
                                   "--out", "{out}/{gpu}_bench_attend_bq128.jsonl"],
            "bench_select_bq128": [PY, "-m", "profiler", "bench-select", "--block-q", "128", "--lengths", "16384",
                                   "65536", "131072", "--tiles", "default", "--gluon-tiles",
                                   "--out", "{out}/{gpu}_bench_select_bq128.jsonl"],
            "sweep_block_q128": [PY, "-m", "profiler", "sweep", "--lengths", *LENGTHS, "--thresholds", "0.001",
                                 "0.003", "0.01", "0.03", "--q-heads", "32", "--kv-heads", "8", "--head-dim", "128",
                                 "--block-q", "128", "--estimate-rows", "all", "32",
                                 "--out", "{out}/{gpu}_sweep_block_q128.jsonl"]},
    },
    "peers": {
        "what": "the computation pass against FlexAttention (Triton and FlashAttention-4 backends) and cuDNN's "
                "block-sparse attention on the same masks (128x128 random and SALE's own 64x32), 32K-128K",
        "traces": ["h200_bench_peers*.jsonl"],
        "commands": {"bench_peers": [PY, "-m", "profiler", "bench-peers", "--lengths", "32768", "65536", "131072",
                                     "--budget-s", "0.3", "--out", "{out}/{gpu}_bench_peers.jsonl"],
                     "bench_peers_steps": [PY, "-m", "profiler", "bench-peers", "--lengths", "32768", "65536",
                                           "--grains", "128x128", "--densities", "1", "0.25", "0.1", "0.05",
                                           "--peers", "flex", "--budget-s", "0.3",
                                           "--out", "{out}/{gpu}_bench_peers_steps.jsonl"]},
    },
    "methods": {
        "what": "SALE (exact and estimate_rows=16) against pooled, vertical-slash, XAttention and FlexPrefill block "
                "selection on the same computation pass, each through its knob, 16K-64K",
        "traces": ["h200_bench_methods.jsonl"],
        "commands": {"bench_methods": [PY, "-m", "profiler", "bench-methods", "--lengths", "16384", "32768", "65536",
                                       "--out", "{out}/{gpu}_bench_methods.jsonl"]},
    },
    "sweep": {
        "what": "SALE against every dense baseline, 4K-128K x tau 0.001-0.03 (what the dashboard draws), and the "
                "exact estimate beside estimate_rows 32, 16, 8",
        "traces": ["h100_sweep.jsonl", "h100_sweep_estimate_rows_*.jsonl"],
        "commands": {
            "sweep": [PY, "-m", "profiler", "sweep", "--lengths", "4096", "8192", *LENGTHS, "--thresholds", "0.001",
                      "0.003", "0.01", "0.03", "--q-heads", "32", "--kv-heads", "8", "--head-dim", "128",
                      "--out", "{out}/{gpu}_sweep.jsonl"],
            "sweep_estimate_rows": [PY, "-m", "profiler", "sweep", "--lengths", *LENGTHS, "--thresholds", "0.001",
                                    "0.003", "0.01", "0.03", "--q-heads", "32", "--kv-heads", "8", "--head-dim",
                                    "128", "--estimate-rows", "all", "32", "16", "8",
                                    "--out", "{out}/{gpu}_sweep_estimate_rows.jsonl"]},
    },
    "smollm2": {
        "what": "SmolLM2-135M: per-layer, per-head thresholds calibrated at 8K (theta 0.1 and 0.4), then accuracy "
                "against dense (needles at 2K-8K, held-out text), and every selection method calibrated to one output-error "
                "budget at 8K and evaluated the same way",
        "traces": ["thresholds_smollm2_*.json", "accuracy_smollm2_*.jsonl", "accuracy_methods_smollm2_*.jsonl"],
        "commands": {
            **{f"calibrate_theta{t}": [PY, "-m", "sale", "calibrate", "--theta", t, "--method", "bisection",
                                       "--seq-len", "8192", "--out", f"{{out}}/thresholds_smollm2_theta{t}_bisection_8k.json"]
               for t in ("0.1", "0.4")},
            **{f"evaluate_theta{t}": [PY, "-m", "sale", "evaluate", "--thresholds",
                                      f"{{out}}/thresholds_smollm2_theta{t}_bisection_8k.json", "--lengths", "2048",
                                      "4096", "8192", "--depths", "0.1", "0.5", "0.9", "--held-out-len", "8192",
                                      "--out", f"{{out}}/accuracy_smollm2_theta{t}_bisection_8k.jsonl"]
               for t in ("0.1", "0.4")},
            "compare_methods": [PY, "-m", "sale", "compare-methods", "--budget", "0.05", "--seq-len", "8192",
                                "--lengths", "2048", "4096", "8192", "--depths", "0.1", "0.5", "0.9",
                                "--held-out-len", "8192", "--out", "{out}/accuracy_methods_smollm2_budget0.05_8k.jsonl"]},
    },
    "gemma3": {
        "what": "Gemma 3 270M at 32K through sale.hf (head dim 256, SALE in its 3 global layers): thresholds "
                "calibrated at 16K and 32K, accuracy against dense (needles at 8K-32K, held-out text), captures of "
                "the global layers at 32K, the estimate's options and every selection method on them (SALE at "
                "the calibrated thresholds too), attention maps, every method calibrated to one output-error budget and "
                "evaluated like SALE; the model's packages carried in parts "
                "(docs/models.md)",
        "traces": ["thresholds_gemma3_*.json", "accuracy_gemma3_*.jsonl", "*_bench_methods_gemma3*.jsonl",
                   "accuracy_methods_gemma3_*.jsonl",
                   "estimate_tradeoff_gemma3_*.jsonl", "maps/gemma3_*"],
        "commands": {
            **{f"calibrate_{n // 1024}k": [PY, "-m", "sale", "calibrate", "--model", "gemma3", "--theta", "0.4",
                                           "--method", "bisection", "--seq-len", str(n),
                                           "--out", f"{{out}}/thresholds_gemma3_theta0.4_bisection_{n // 1024}k.json"]
               for n in (16384, 32768)},
            "evaluate": [PY, "-m", "sale", "evaluate", "--model", "gemma3", "--thresholds",
                         "{out}/thresholds_gemma3_theta0.4_bisection_32k.json", "--lengths", "8192", "16384", "32768",
                         "--depths", "0.1", "0.5", "0.9", "--held-out-len", "32768",
                         "--out", "{out}/accuracy_gemma3_theta0.4_bisection_32k.jsonl"],
            "capture": [PY, "-m", "sale", "capture", "--model", "gemma3", "--device", "cuda", "--prompt", "held_out",
                        "--seq-len", "32768", "--layers", "5", "11", "17",
                        "--out", "{out}/gemma3_held_out_N32768.safetensors"],
            "estimate_tradeoff": [PY, "-m", "profiler", "estimate-tradeoff", "--from-capture",
                                  "{out}/gemma3_held_out_N32768.safetensors",
                                  "--out", "{out}/estimate_tradeoff_gemma3_held_out_N32768.jsonl"],
            "bench_methods": [PY, "-m", "profiler", "bench-methods", "--from-capture",
                              "{out}/gemma3_held_out_N32768.safetensors", "--thresholds",
                              "{out}/thresholds_gemma3_theta0.4_bisection_32k.json",
                              "--out", "{out}/{gpu}_bench_methods_gemma3_N32768.jsonl"],
            "capture_maps": [PY, "-m", "profiler", "capture-maps", "--from-capture",
                             "{out}/gemma3_held_out_N32768.safetensors", "--layer", "17",
                             "--out", "{out}/maps/gemma3_held_out_N32768_layer17.safetensors"],
            "compare_methods": [PY, "-m", "sale", "compare-methods", "--model", "gemma3", "--budget", "0.05",
                                "--seq-len", "16384", "--lengths", "8192", "16384", "32768", "--depths", "0.1", "0.5",
                                "0.9", "--held-out-len", "32768", "--out", "{out}/accuracy_methods_gemma3_budget0.05_16k.jsonl"]},
    },
    "captures": {
        "what": "a torch.profiler capture of one point (32K, tau 0.01) and block-level attention maps",
        "traces": ["torch_profile/*", "maps/*", "ncu/*", "thresholds_structured_*.json",
                   "estimate_tradeoff_smollm2_*.jsonl"],
        "commands": {
            "capture_torch": [PY, "-m", "profiler", "capture-torch", "--seq-len", "32768", "--threshold", "0.01",
                              "--out", "{out}/torch_profile"],
            "capture_maps": [PY, "-m", "profiler", "capture-maps", "--seq-len", "4096",
                             "--out", "{out}/maps/structured_N4096.safetensors"],
            "calibrate_structured": [PY, "-m", "sale", "calibrate", "--model", "synthetic", "--theta", "0.2",
                                     "--method", "bisection", "--out", "{out}/thresholds_structured_theta0.2_bisection.json"],
            "capture_smollm2": [PY, "-m", "sale", "capture", "--prompt", "held_out", "--seq-len", "4096", "--layers",
                                "2", "6", "10", "14", "18", "22", "26", "29",
                                "--out", "{out}/smollm2_held_out_N4096.safetensors"],
            "estimate_tradeoff": [PY, "-m", "profiler", "estimate-tradeoff", "--from-capture",
                                  "{out}/smollm2_held_out_N4096.safetensors",
                                  "--out", "{out}/estimate_tradeoff_smollm2_held_out_N4096.jsonl"]},
    },
}


def claimed(path: str) -> bool:
    """Whether a file under traces/ (a path relative to it) is made by some preset: it or, for a .txt, the .jsonl
    beside it matches a preset's pattern."""
    import fnmatch
    names = {path, path[:-4] + ".jsonl"} if path.endswith(".txt") else {path}
    return any(fnmatch.fnmatch(name, pattern) for preset in PRESETS.values() for pattern in preset["traces"]
               for name in names)


def expand(preset: str, out: str, gpu: str) -> dict[str, list[str]]:
    """The preset's commands with {out} and {gpu} filled in."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return {name: [a.format(out=out, gpu=gpu) for a in argv] for name, argv in PRESETS[preset]["commands"].items()}


def gpu_short_name() -> str:
    """'h200', 'h100', ... from the CUDA device's name, or 'cpu'."""
    import torch
    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name().lower()
    for short in ("h200", "h100", "h20", "gh200", "a100", "l40s"):
        if short in name:
            return short
    return name.replace("nvidia", "").strip().split()[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m profiler suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--list", action="store_true", help="the presets, their commands and traces")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--out", default=None, help="output folder (default runs/suite/PRESET)")
    p.add_argument("--gpu-name", default=None, help="short GPU name in file names (default: from the device)")
    args = p.parse_args(argv)
    if args.list:
        for name, preset in PRESETS.items():
            print(f"{name}: {preset['what']}\n  traces: {', '.join(preset['traces'])}")
            for argv_ in expand(name, "runs/suite/" + name, "{gpu}").values():
                print("  $ " + " ".join(argv_))
        return 0
    if not args.preset:
        p.error("give --preset NAME (or --list)")
    out = args.out or os.path.join("runs", "suite", args.preset)
    gpu = args.gpu_name or ("{gpu}" if args.dry_run else gpu_short_name())
    commands = expand(args.preset, out, gpu)
    if args.dry_run:
        for argv_ in commands.values():
            print(" ".join(argv_))
        return 0
    os.makedirs(out, exist_ok=True)
    failed = []
    for name, argv_ in commands.items():
        print(f"$ {' '.join(argv_)}", flush=True)
        with open(os.path.join(out, f"{name}.txt"), "w") as log:
            run = subprocess.run(argv_, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            log.write(run.stdout)
        print(run.stdout[-3000:], flush=True)
        if run.returncode:
            failed.append(name)
    if failed:
        print(f"error: {len(failed)} of {len(commands)} commands failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
