"""Run 24 probe: does Triton 3.6's Hopper warp specialization (tl.range(..., warp_specialize=True) with TMA
descriptor loads) make a causal flash-attention forward faster, and does it survive an index list
(the block-sparse gather)? Dense causal attention, Llama-3.1-8B shapes (32 q heads, 8 kv heads, D=128,
bf16), against SDPA cuDNN in the same run; output checked against cuDNN's.

    python3 notes/dev_runs/run24_ws_probe.py [N ...]        (GPU; prints one line per variant)
    python3 notes/dev_runs/run24_ws_probe.py --compile-only  (no GPU: which variants compile for sm_90)
"""
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _probe_fwd(desc_q, desc_k, desc_v, desc_o, idx_ptr, N, HQ, GROUP, scale_log2e,
               HEAD_DIM: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, WS: tl.constexpr, IDX: tl.constexpr):
    pid = tl.num_programs(0) - 1 - tl.program_id(0)   # longest rows first
    bh = tl.program_id(1)
    kvh = (bh % HQ) // GROUP + (bh // HQ) * (HQ // GROUP)
    row0 = bh * N + pid * BM
    q = desc_q.load([row0, 0])
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, HEAD_DIM), tl.float32)
    n_full = (pid * BM) // BN
    for j in tl.range(0, n_full, warp_specialize=WS):
        if IDX:   # the block-sparse form: the key block comes from a list (here every block, in order)
            blk = tl.load(idx_ptr + j)
        else:
            blk = j
        kr = kvh * N + blk * BN
        k = desc_k.load([kr, 0])
        s = tl.dot(q, k.T)
        m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2e)
        p = tl.exp2(s * scale_log2e - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = desc_v.load([kr, 0])
        acc = tl.dot(p.to(tl.bfloat16), v, acc)
        m_i = m_new
    rows = pid * BM + tl.arange(0, BM)
    for j in range(n_full, (pid * BM + BM) // BN):   # diagonal blocks, masked
        kr = kvh * N + j * BN
        k = desc_k.load([kr, 0])
        s = tl.dot(q, k.T)
        keys = j * BN + tl.arange(0, BN)
        s = tl.where(keys[None, :] <= rows[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1) * scale_log2e)
        p = tl.exp2(s * scale_log2e - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v = desc_v.load([kr, 0])
        acc = tl.dot(p.to(tl.bfloat16), v, acc)
        m_i = m_new
    acc = acc / l_i[:, None]
    desc_o.store([row0, 0], acc.to(tl.bfloat16))


VARIANTS = [  # BM, BN, warps, stages, WS, IDX
    (128, 128, 8, 3, False, False), (128, 128, 8, 3, True, False), (128, 128, 8, 2, True, False),
    (128, 64, 8, 3, True, False), (128, 128, 8, 3, True, True),
    (64, 64, 4, 3, False, False), (64, 64, 4, 3, True, False), (64, 32, 4, 3, True, False),
    (64, 32, 4, 4, True, True), (64, 32, 4, 4, False, True),
]


def run(q, k, v, BM, BN, warps, stages, ws, idx):
    from triton.tools.tensor_descriptor import TensorDescriptor
    b, hq, n, d = q.shape
    hkv = k.shape[1]
    q2, k2, v2 = q.reshape(-1, d), k.reshape(-1, d), v.reshape(-1, d)
    out = torch.empty_like(q)
    dq = TensorDescriptor.from_tensor(q2, [BM, d])
    dk = TensorDescriptor.from_tensor(k2, [BN, d])
    dv = TensorDescriptor.from_tensor(v2, [BN, d])
    do = TensorDescriptor.from_tensor(out.reshape(-1, d), [BM, d])
    idx_t = torch.arange(n // BN, dtype=torch.int32, device=q.device)
    _probe_fwd[(n // BM, b * hq)](dq, dk, dv, do, idx_t, n, hq, hq // hkv, d ** -0.5 * 1.4426950408889634,
                                  HEAD_DIM=d, BM=BM, BN=BN, WS=ws, IDX=idx, num_warps=warps, num_stages=stages)
    return out


def main():
    if "--compile-only" in sys.argv:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        fn = _probe_fwd
        for BM, BN, w, st, ws, idx in VARIANTS:
            sig = {"desc_q": f"tensordesc<bf16[{BM},128]>", "desc_k": f"tensordesc<bf16[{BN},128]>",
                   "desc_v": f"tensordesc<bf16[{BN},128]>", "desc_o": f"tensordesc<bf16[{BM},128]>",
                   "idx_ptr": "*i32", "N": "i32", "HQ": "i32", "GROUP": "i32", "scale_log2e": "fp32"}
            cx = dict(HEAD_DIM=128, BM=BM, BN=BN, WS=ws, IDX=idx)
            sig.update({k: "constexpr" for k in cx})
            src = ASTSource(fn=fn, signature=sig, attrs={(fn.arg_names.index("N"),): [["tt.divisibility", 16]]},
                            constexprs={(fn.arg_names.index(k),): v for k, v in cx.items()})
            try:
                c = triton.compile(src, target=GPUTarget("cuda", 90, 128), options={"num_warps": w, "num_stages": st})
                print(BM, BN, w, st, ws, idx, "compiles: warps", c.metadata.num_warps, "smem", c.metadata.shared)
            except Exception as e:
                print(BM, BN, w, st, ws, idx, "fails:", str(e).splitlines()[-1][:120])
        return
    from triton.testing import do_bench
    torch.manual_seed(0)
    for n in [int(x) for x in sys.argv[1:]] or [16384, 65536]:
        q = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16)
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            t_ref = do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                             warmup=50, rep=300, return_mode="median")
        print(f"N={n} cudnn {t_ref:.3f} ms", flush=True)
        for var in VARIANTS:
            try:
                out = run(q, k, v, *var)
                err = (out.float() - ref.float()).abs().max().item()
                t = do_bench(lambda: run(q, k, v, *var), warmup=50, rep=300, return_mode="median")
                print(f"  BM={var[0]} BN={var[1]} warps={var[2]} stages={var[3]} ws={var[4]} idx={var[5]}: {t:.3f} ms, "
                      f"cudnn/this {t_ref / t:.3f}, max|err| {err:.2e}", flush=True)
            except Exception as e:
                print(f"  {var}: FAILED {str(e).splitlines()[-1][:150]}", flush=True)


if __name__ == "__main__":
    main()
