"""Run 22 side check (session 3, no GPU): does ptxas serialize the wgmmas of a plain Triton tl.dot
matmul compiled for sm_90? Compiles a 128x128x64 fp16 matmul loop with the installed Triton and prints
the ptxas C75xx lines (`-v`) and the count of WARPGROUP.DEPBAR waits in its SASS.
    python3 notes/dev_runs/run22_ptxas_wgmma_check.py      (without TRITON_INTERPRET)"""
import os
import re
import subprocess
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


@triton.jit
def _matmul(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    r, c, kk = tl.arange(0, BM), tl.arange(0, BN), tl.arange(0, BK)
    acc = tl.zeros((BM, BN), tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + r[:, None] * K + (k + kk)[None, :])
        b = tl.load(b_ptr + (k + kk)[:, None] * BN + c[None, :])
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + r[:, None] * BN + c[None, :], acc)


div = [["tt.divisibility", 16]]
src = ASTSource(fn=_matmul, signature={"a_ptr": "*fp16", "b_ptr": "*fp16", "c_ptr": "*fp32", "K": "i32",
                                       "BM": "constexpr", "BN": "constexpr", "BK": "constexpr"},
                constexprs={(4,): 128, (5,): 128, (6,): 64}, attrs={(i,): div for i in range(4)})
compiled = triton.compile(src, target=GPUTarget("cuda", 90, 128), options={"num_warps": 8, "num_stages": 3})
bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
with tempfile.TemporaryDirectory() as tmp:
    ptx, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
    with open(ptx, "w") as f:
        f.write(compiled.asm["ptx"])
    log = subprocess.run([os.path.join(bin_dir, "ptxas"), "-v", "--gpu-name=sm_90a", ptx, "-o", cubin],
                         capture_output=True, text=True).stderr
    sass = subprocess.run([os.path.join(bin_dir, "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
print(f"triton {triton.__version__}:", "\n".join(re.findall(r"\(C75\d\d\)[^\n]*", log)) or "no C75xx message")
print("GMMA instructions:", len(re.findall(r"GMMA\.", sass)), " WARPGROUP.DEPBAR waits:", sass.count("WARPGROUP.DEPBAR"))
