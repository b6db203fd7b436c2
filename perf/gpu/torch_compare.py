#!/usr/bin/env python3
"""PyTorch on the seed problems, side by side with kfuse in the same run.

Reads what `kfuse_perf --export DIR` wrote (each problem's input x, weights,
operands and kfuse's output as .npy), builds the PyTorch modules of the seed
problems (KB42 and KB44, copied from the anchors) with the same weights, and
  - times PyTorch eager with TF32 convolutions (PyTorch's default,
    torch.backends.cudnn.allow_tf32 = True), eager fp32 (allow_tf32 = False)
    and torch.compile (default mode), with CUDA events, a warm-up, an L2 flush
    (a write of twice the L2 size) before each of >= 50 runs, median and min;
  - checks kfuse's output and PyTorch's against an exact float64 reference
    (the fold in float64 on the GPU: the spatial mean of the transposed
    convolution from rectangle sums of x);
  - for the bf16 run of the first problem, times the module in bfloat16.
Merges its results into kfuse_perf's JSON and appends a table to the Markdown.

  python3 torch_compare.py --export DIR --kfuse-json RESULTS.json [--reps 50] [--no-compile]
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn

dev = "cuda"


class KB42(nn.Module):  # convT -> mean(HW) -> +bias -> logsumexp(C) -> sum(HW) -> *10
    def __init__(s, cin, cout, k, bias_shape):
        super().__init__()
        s.conv_transpose = nn.ConvTranspose2d(cin, cout, k)
        s.bias = nn.Parameter(torch.randn(bias_shape))

    def forward(s, x):
        x = s.conv_transpose(x)
        x = torch.mean(x, dim=(2, 3), keepdim=True)
        x = x + s.bias
        x = torch.logsumexp(x, dim=1, keepdim=True)
        x = torch.sum(x, dim=(2, 3))
        return x * 10.0


class KB44(nn.Module):  # convT(s,p,op) -> *m -> mean(HW) -> mean(HW)
    def __init__(s, cin, cout, k, stride, pad, opad, mult):
        super().__init__()
        s.conv_transpose = nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=pad, output_padding=opad)
        s.multiplier = mult

    def forward(s, x):
        x = s.conv_transpose(x) * s.multiplier
        x = torch.mean(x, dim=[2, 3], keepdim=True)
        return torch.mean(x, dim=[2, 3], keepdim=True)


def fold_mean(x, w, b, stride, pad, opad):
    """Exact spatial mean of conv_transpose2d(x) (dilation 1, groups 1) without materialising it."""
    N, Cin, H, W = x.shape
    k = w.shape[2]
    Ho = (H - 1) * stride - 2 * pad + (k - 1) + opad + 1
    Wo = (W - 1) * stride - 2 * pad + (k - 1) + opad + 1

    def rng(n_in, n_out, kk):
        lo = max(0, (pad - kk + stride - 1) // stride)
        hi = min(n_in - 1, (n_out - 1 + pad - kk) // stride)
        return lo, hi

    acc = torch.zeros(N, w.shape[1], dtype=x.dtype, device=x.device)
    for kh in range(k):
        h0, h1 = rng(H, Ho, kh)
        for kw in range(k):
            w0, w1 = rng(W, Wo, kw)
            S = x[:, :, h0:h1 + 1, w0:w1 + 1].sum((2, 3))  # [N, Cin]
            acc += S @ w[:, :, kh, kw]
    return acc / (Ho * Wo) + b  # [N, Cout]


class Flusher:
    """L2 flush: a read-only pass over twice the L2 size (a write would leave
    dirty lines whose write-back lands in the next timed run), as kfuse_perf."""

    def __init__(self):
        l2 = torch.cuda.get_device_properties(0).L2_cache_size
        self.buf = torch.rand(max(2 * l2, 1 << 20) // 4, dtype=torch.float32, device=dev)

    def __call__(self):
        self.buf.sum()
        torch.cuda.synchronize()


def hold_stream():
    """About 1 ms of GPU spin before the start event: the launches that follow queue
    behind it, so the events time the GPU's work without the host's launch latency
    (as kfuse_perf's device time: its launches queue behind a hold of the stream)."""
    torch.cuda._sleep(2_000_000)


def bench(fn, flush, reps, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        flush()
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        hold_stream()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    ts.sort()
    return {"ms_median": float(np.median(ts)), "ms_min": float(ts[0]), "reps": reps}


def rel(a, b):
    a = a.detach().double().flatten().cpu()
    b = b.detach().double().flatten().cpu()
    return float((a - b).norm() / b.norm())


def load(d, name, part):
    return torch.from_numpy(np.load(os.path.join(d, f"{name}_{part}.npy"))).to(dev)


def problem(d, name, args, flush):
    """One problem: returns a dict of timings and errors."""
    if not os.path.exists(os.path.join(d, f"{name}_x.npy")):
        return None
    half = name.endswith("_bf16")
    x = load(d, name, "x")
    w = load(d, name, "op0_weight")
    b = load(d, name, "op0_bias")
    kout = load(d, name, "kfuse_out")
    cin, cout, k = w.shape[0], w.shape[1], w.shape[2]
    r = {"name": name}
    with torch.no_grad():
        if name.startswith("convt_gap_bias_lse"):
            extra = load(d, name, "op2_operand")
            m = KB42(cin, cout, k, tuple(extra.shape)).to(dev)
            m.bias.copy_(extra)
            stride, pad, opad = 1, 0, 0
        else:
            m = KB44(cin, cout, k, 2, 1, 1, 0.5).to(dev)
            stride, pad, opad = 2, 1, 1
        m.conv_transpose.weight.copy_(w)
        m.conv_transpose.bias.copy_(b)
        # Exact float64 reference on the same (already rounded) inputs.
        mean = fold_mean(x.double(), w.double(), b.double(), stride, pad, opad)
        if name.startswith("convt_gap_bias_lse"):
            ref = 10 * torch.logsumexp(mean + m.bias.double().view(1, -1), dim=1, keepdim=True)
        else:
            ref = (mean * 0.5).view(x.shape[0], cout, 1, 1)
        r["kfuse_rel_err_vs_fp64"] = rel(kout.view(-1), ref.view(-1))
        xin = x.to(torch.bfloat16) if half else x
        mod = m.to(torch.bfloat16) if half else m

        def run(label, fn, tf32):
            torch.backends.cudnn.allow_tf32 = tf32
            try:
                out = fn()
                torch.cuda.synchronize()
                res = bench(fn, flush, args.reps)
                res["rel_err_vs_fp64"] = rel(out.float().view(-1), ref.view(-1))
                res["kfuse_vs_this_rel"] = rel(kout.view(-1), out.float().view(-1))
            except Exception as ex:  # record failures honestly
                res = {"error": repr(ex)[:300]}
            r[label] = res
            print(name, label, res, flush=True)

        run("eager_tf32", lambda: mod(xin), True)
        if not half:
            run("eager_fp32", lambda: mod(xin), False)
        if not args.no_compile and not half:
            t0 = time.time()
            cm = torch.compile(mod)
            run("compile", lambda: cm(xin), True)
            r["compile"]["compile_s"] = time.time() - t0
        torch.backends.cudnn.allow_tf32 = True
    del x, m
    torch.cuda.empty_cache()
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--export", required=True)
    ap.add_argument("--kfuse-json", required=True)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    args.reps = max(50, args.reps)
    flush = Flusher()
    print("torch", torch.__version__, torch.cuda.get_device_name(), flush=True)
    results = []
    for name in ["convt_gap_bias_lse", "convt_mul_gap", "convt_gap_bias_lse_bf16"]:
        r = problem(args.export, name, args, flush)
        if r:
            results.append(r)

    with open(args.kfuse_json) as f:
        kj = json.load(f)
    kj["torch"] = {"version": torch.__version__, "device": torch.cuda.get_device_name(), "problems": results}
    with open(args.kfuse_json, "w") as f:
        json.dump(kj, f, indent=2)

    kcases = {c["name"]: c for c in kj["cases"]}
    md = args.kfuse_json[:-5] + ".md"
    with open(md, "a") as f:
        f.write("\n## Side by side with PyTorch (same process group, same inputs and weights)\n\n")
        f.write("| problem | kfuse device ms | kfuse wall ms | eager TF32 ms | eager fp32 ms | torch.compile ms | "
                "kfuse rel err vs fp64 | eager fp32 rel err | compile rel err | compile / kfuse |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|\n")

        def g(r, k, f2="ms_median"):
            v = r.get(k, {})
            return v.get(f2) if isinstance(v, dict) and f2 in v else None

        def fmt(v, p=4):
            return "" if v is None else (f"{v:.{p}f}" if abs(v) >= 1e-3 else f"{v:.2e}")

        for r in results:
            kc = kcases.get(r["name"], {})
            kd, kw = kc.get("device_ms_median"), kc.get("wall_ms_median")
            comp = g(r, "compile")
            f.write(f"| {r['name']} | {fmt(kd)} | {fmt(kw)} | {fmt(g(r, 'eager_tf32'))} | {fmt(g(r, 'eager_fp32'))} | "
                    f"{fmt(comp)} | {fmt(r['kfuse_rel_err_vs_fp64'])} | {fmt(g(r, 'eager_fp32', 'rel_err_vs_fp64'))} | "
                    f"{fmt(g(r, 'compile', 'rel_err_vs_fp64'))} | {fmt(comp / kd if comp and kd else None, 1)} |\n")
    print("merged into", args.kfuse_json, "and", md, flush=True)


if __name__ == "__main__":
    main()
