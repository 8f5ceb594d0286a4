"""What a kernel's hot loop compiles to on Hopper, without a GPU: registers, spills, shared memory,
and the opcode histogram of the loop around its first 8-bit (or any) tensor-core instruction.

    python -m profiler sass-loop --kernel select [--tile default] [--estimate-rows 16] [--out DIR]
    python -m profiler sass-loop --kernel attend --tile gathered
    python -m profiler sass-loop --kernel attend --tile gluon      (the Gluon computation pass)

It compiles the project's Triton kernel for sm_90a with the installed Triton's bundled ptxas (no
driver needed), with the same constexprs and alignment assumptions as a launch on Llama-3.1-8B shapes,
and disassembles it with cuobjdump. The histogram counts SASS instructions of one loop iteration for
one thread: per-element epilogue work, shuffles, barriers (BAR) and shared-memory traffic (LDS/STS)
show up directly (docs/kernels.md reads them). `--out` keeps the TTGIR, PTX and SASS.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
from collections import Counter

# integer arguments that a launch on N = 65536 (and any multiple of 16) passes divisible by 16; Triton
# specializes on that, so the compile here must assume it too to give the same code
_DIVISIBLE = {"N", "HQ", "NQB", "NKB", "NPB", "WINDOW"}


def _signature(fn, constexprs: dict, pointer_types: dict) -> tuple[dict, dict]:
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.startswith("desc_"):  # a TMA tensor descriptor: its type names dtype and box
            sig[name] = pointer_types[name]
        elif name.endswith("_ptr"):
            sig[name] = pointer_types.get(name, "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name.startswith("scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if name in _DIVISIBLE or name.startswith("stride_"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, attrs


def compile_for_hopper(kernel: str, tile: str = "default", estimate_rows: int | None = None, head_dim: int = 128,
                       int8_qk: bool = False):
    """The compiled kernel (triton CompiledKernel) for sm_90 and the launch options used; int8_qk: the
    computation pass with 8-bit q . k (SaleConfig.int8_qk)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    if kernel == "select":
        from sale.triton.select_kernel import PROBE_CONFIGS, SELECT_CONFIGS, keys_first_options, _select_kernel as fn
        cfg = {**SELECT_CONFIGS, **PROBE_CONFIGS}[tile]
        stride = 64 // estimate_rows if estimate_rows else 1
        constexprs = dict(HEAD_DIM=head_dim, BQ=64, BK=32, QB=cfg["qb"] * stride, ROW_STRIDE=stride,
                          BLOCK_N=cfg["block_n"], STATS_N=cfg["stats_n"], FILL_NB=64, WRITE_MARGIN=False,
                          INTERPRET=False, EPI=cfg["epi"], HEADS_FIRST=cfg["heads_first"], SINK_BLOCKS=1,
                          FP8=cfg["fp8"], **keys_first_options(cfg, cfg["epi"], cfg["block_n"], 32), PHASE=0)
        pointers = dict(q_ptr="*bf16", k_ptr="*bf16", qhat_ptr="*i8", khat_ptr="*fp8e4nv" if cfg["fp8"] else "*i8", mask_ptr="*i8",
                        counts_ptr="*i32", idx_ptr="*i32")
    elif kernel == "select-gluon":
        return _compile_gluon_select(tile, head_dim, estimate_rows)
    elif kernel == "attend" and tile in _gluon_tiles():
        return _compile_gluon_attend(tile, head_dim)
    elif kernel == "attend" and tile in _split_tiles():
        from sale.triton.attend_kernel import ATTEND_CONFIGS, _attend_steps_kernel as fn
        cfg = ATTEND_CONFIGS[tile]
        constexprs = dict(HEAD_DIM=head_dim, BQ=64, BK=32, INTERPRET=False, QK8=_qk8(cfg, int8_qk),
                          LONE_PAIRS=cfg.get("lone_pairs", False))
        qk = "i8" if int8_qk else "bf16"
        pointers = dict(q_ptr=f"*{qk}", k_ptr=f"*{qk}", v_ptr="*bf16", o_ptr="*bf16", counts_ptr="*i32",
                        steps_ptr="*i32", desc_k2=f"tensordesc<{qk}[1,1,64,{head_dim}]>",
                        desc_v2=f"tensordesc<bf16[1,1,64,{head_dim}]>")
    elif kernel == "attend":
        from sale.triton.attend_kernel import ATTEND_CONFIGS, _attend_kernel as fn
        cfg = ATTEND_CONFIGS[tile]
        constexprs = dict(HEAD_DIM=head_dim, BQ=64, BK=32, TB=cfg["tb"], DIAG=2, INTERPRET=False,
                          QK8=_qk8(cfg, int8_qk))
        qk = "i8" if int8_qk else "bf16"
        pointers = dict(q_ptr=f"*{qk}", k_ptr=f"*{qk}", v_ptr="*bf16", o_ptr="*bf16", counts_ptr="*i32",
                        idx_ptr="*i32")
    else:
        raise ValueError(f"kernel must be 'select' or 'attend', got {kernel!r}")
    sig, attrs = _signature(fn, constexprs, pointers)
    src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    options = {"num_warps": cfg["warps"], "num_stages": cfg["stages"]}
    if cfg.get("maxnreg"):
        options["maxnreg"] = cfg["maxnreg"]
    return triton.compile(src, target=GPUTarget("cuda", 90, 128), options=options), options


def _qk8(cfg: dict, int8_qk: bool) -> int:
    return 1 if int8_qk else 0


def _gluon_tiles() -> set:
    from sale.triton.attend_kernel import ATTEND_CONFIGS
    return {name for name, cfg in ATTEND_CONFIGS.items() if cfg.get("gluon")}


def _compile_gluon_attend(tile: str, head_dim: int):
    """The Gluon computation pass (attend_gluon.py) for sm_90, as attend_union_gluon launches it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource
    from sale.triton.attend_gluon import _attend_gluon_split_kernel as fn
    from sale.triton.attend_kernel import ATTEND_CONFIGS
    cfg = ATTEND_CONFIGS[tile]
    box = [1, 1, 32, 64]
    desc = f"tensordesc<bf16[{','.join(map(str, box))}],{gl.NVMMASharedLayout.get_default_for(box, gl.bfloat16)!r}>"
    constexprs = dict(HEAD_DIM=head_dim, BQ=64, BK=32, SLOTS=cfg["slots"], STAGES=cfg["stages"],
                      CONSUMER_REGS=240, PRODUCER_REGS=24, num_warps=4, DYNAMIC=cfg.get("persistent", False))
    sig, attrs = _signature(fn, constexprs, {"q_ptr": "*bf16", "o_ptr": "*bf16", "counts_ptr": "*i32", "codes_ptr": "*i32",
                                             "counter_ptr": "*i32", "desc_k": desc, "desc_v": desc})
    options = {"num_warps": 4}
    return triton.compile(GluonASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", 90, 128),
                          options=options), options


def _compile_gluon_select(tile: str, head_dim: int, estimate_rows: int | None):
    """The Gluon estimate (select_gluon.py) for sm_90, as select_gluon launches it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon._runtime import GluonASTSource
    from sale.triton.select_gluon import GLUON_PROBES, GLUON_SELECT_CONFIGS, _estimate_gluon_kernel as fn
    cfg = {**GLUON_SELECT_CONFIGS, **GLUON_PROBES}["gluon" if tile == "default" else tile]

    def desc(dtype, box, layout):
        return f"tensordesc<{dtype}[{','.join(map(str, box))}],{layout!r}>"

    fp8 = [desc("fp8e4nv", [1, rows, head_dim], gl.NVMMASharedLayout.get_default_for([1, rows, head_dim], gl.float8e4nv))
           for rows in (cfg["rows"], cfg["block_n"])]
    vec = desc("fp32", [1, cfg["block_n"]], gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=2))
    constexprs = dict(HEAD_DIM=head_dim, BQ=64, BQS=64 // (64 // estimate_rows if estimate_rows else 1), BK=32,
                      ROWS=cfg["rows"], BLOCK_N=cfg["block_n"], STAGES=cfg["stages"], CONSUMER_REGS=cfg["consumer_regs"],
                      num_warps=4, PROBE=cfg.get("probe", 0))
    sig, attrs = _signature(fn, constexprs, {"desc_q": fp8[0], "desc_k": fp8[1], "desc_sk": vec, "desc_qmk": vec,
                                             "mask_ptr": "*i8"})
    return triton.compile(GluonASTSource(fn, sig, constexprs, attrs), target=GPUTarget("cuda", 90, 128),
                          options={"num_warps": 4}), {"num_warps": 4}


def _split_tiles() -> set:
    from sale.triton.attend_kernel import ATTEND_CONFIGS
    return {name for name, cfg in ATTEND_CONFIGS.items() if cfg.get("split")}


def _tool(name: str) -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def loop_histogram(sass: str, match: str = "GMMA") -> dict:
    """Opcode counts of the innermost loop around the first instruction matching `match` (a regular
    expression; default any tensor-core GMMA) that lies in a loop: the span from a backward branch's
    target to that branch."""
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in
           (re.match(r"\s*/\*([0-9a-f]+)\*/\s+(.*?);", line) for line in sass.splitlines()) if m]
    branches = [(a, int(m.group(1), 16)) for a, t in ins for m in [re.search(r"BRA\s+(0x[0-9a-f]+)", t)]
                if m and int(m.group(1), 16) < a]                   # (branch address, target) going back
    for addr, text in ins:
        if not re.search(match, text):
            continue
        loops = [(hi, lo) for hi, lo in branches if lo <= addr <= hi]
        if loops:
            hi, lo = min(loops, key=lambda span: span[0] - span[1])  # the innermost
            break
    else:
        raise ValueError(f"no instruction matching {match!r} inside a loop")
    body = [t for a, t in ins if lo <= a <= hi]
    ops = Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in body)
    return {"loop_start": hex(lo), "loop_end": hex(hi), "instructions": len(body), "opcodes": dict(ops.most_common())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernel", choices=["select", "select-gluon", "attend"], default="select")
    p.add_argument("--tile", default="default")
    p.add_argument("--estimate-rows", type=int, default=None)
    p.add_argument("--head-dim", type=int, default=128, choices=[64, 128, 256])
    p.add_argument("--match", default=None, help="regex of the instruction whose loop to count (default: the "
                   "select kernel's 8-bit IGMMA or QGMMA, the attend kernel's first GMMA)")
    p.add_argument("--out", default=None, help="folder for the TTGIR, PTX and SASS")
    p.add_argument("--int8-qk", action="store_true", help="the computation pass with 8-bit q . k (SaleConfig.int8_qk)")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("sass-loop compiles for the GPU: run it without TRITON_INTERPRET=1 (no GPU is needed)")
    compiled, options = compile_for_hopper(args.kernel, args.tile, args.estimate_rows, args.head_dim,
                                           args.int8_qk)
    cubin = compiled.asm["cubin"]
    folder = args.out or "/tmp/sale_sass"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{args.kernel}_{args.tile}{'_int8' if args.int8_qk else ''}.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    sass = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
    usage = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True).stdout
    if args.out:
        for ext in ("ttgir", "ptx"):
            with open(os.path.join(folder, f"{args.kernel}_{args.tile}.{ext}"), "w") as f:
                f.write(compiled.asm[ext])
        with open(os.path.join(folder, f"{args.kernel}_{args.tile}.sass"), "w") as f:
            f.write(sass)
    regs = re.search(r"REG:(\d+)", usage)
    stack = re.search(r"STACK:(\d+)", usage)
    # the Gluon tiles' first GMMA is step 0's, before the loops: count the loop of p . v (A in registers)
    default_match = ("[IQ]GMMA" if args.kernel.startswith("select") else
                     r"GMMA\S* R\d+, R\d+," if args.tile in _gluon_tiles() else "GMMA")
    hist = loop_histogram(sass, args.match or default_match)
    import triton
    print(f"{args.kernel} tile={args.tile} estimate_rows={args.estimate_rows} int8_qk={args.int8_qk} {options} (triton {triton.__version__}, sm_90)")
    print(f"registers {regs.group(1) if regs else '?'}, stack {stack.group(1) if stack else '?'} B, "
          f"shared {compiled.metadata.shared} B")
    print(f"hot loop {hist['loop_start']}-{hist['loop_end']}: {hist['instructions']} instructions per thread per iteration")
    print("  " + "  ".join(f"{k}:{v}" for k, v in hist["opcodes"].items()))
    return hist


if __name__ == "__main__":
    main()
