#!/usr/bin/env python3
"""PyTorch peers of `seqkern bench --backend cuda` (bench/gpu.ts), on the same shapes and dtypes: SDPA
(flash backend where PyTorch has it) for the attention prefill and decode, and torch.softmax of 1 GiB.
Timed with CUDA events after warm-up, median of many. Prints JSON on stdout (bench/results/ keeps it).
Runs with nothing but python3 and torch on a GPU machine (../shared/GPU.md)."""
import json
import statistics
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a machine without torch: say so, in JSON, and fail
    print(json.dumps({"error": f"torch is not installed: {e}"}))
    sys.exit(1)


def timed(f, reps=20, warmup=3):
    for _ in range(warmup):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


def sdpa(q, k, v, causal, backend=None):
    # torch wants [B, H, T, D]; seqkern's layout is [B, T, H, D].
    def run():
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])
    if backend is not None:
        from torch.nn.attention import sdpa_kernel
        def run_with():
            with sdpa_kernel(backend):
                return run()
        return run_with
    return run


def main():
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device"}))
        return 1
    dev = torch.device("cuda")
    rows = []
    try:
        from torch.nn.attention import SDPBackend
        flash = SDPBackend.FLASH_ATTENTION
    except ImportError:
        flash = None
    B, T, H, D = 1, 8192, 16, 128
    q = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16)
    ms = timed(sdpa(q, k, v, True, flash), reps=10)
    rows.append({"name": f"sdpa prefill bf16 causal B={B} T={T} H={H} D={D}", "ms": ms,
                 "tflops": 2 * B * T * T * H * D / (ms * 1e-3) / 1e12, "backend": "flash" if flash else "default"})
    B, S, Hq, Hk, D = 16, 8192, 32, 8, 128
    q = torch.randn(B, Hq, 1, D, device=dev, dtype=torch.bfloat16)
    k = torch.randn(B, Hk, S, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(B, Hk, S, D, device=dev, dtype=torch.bfloat16)
    ms = timed(sdpa(q, k, v, False))
    rows.append({"name": f"sdpa decode bf16 B={B} S={S} Hq={Hq} Hk={Hk} D={D}", "ms": ms,
                 "gbs": 2 * B * S * Hk * D * 2 / (ms * 1e-3) / 1e9})
    x = torch.randn(8192, 32768, device=dev, dtype=torch.float32)
    ms = timed(lambda: torch.softmax(x, dim=-1), reps=10)
    rows.append({"name": "torch.softmax float32 [8192,32768] (1 GiB)", "ms": ms,
                 "gbs": 2 * x.numel() * 4 / (ms * 1e-3) / 1e9})
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
