#!/usr/bin/env python3
"""The public benchmark set (specs/general): kfuse next to PyTorch in one run.

Pipelines that do not fold, at real sizes (conv outputs of 0.5-2 GB). Three
steps, on the GPU machine:

  python3 general.py prepare --specs specs/general --dir D
      x = torch.rand, the conv's weight and bias from nn.ConvTranspose2d's
      default init, operands torch.randn (seeded), saved as .npy; each spec
      rewritten to read them ({"npy": ...}); D/cases.json lists the cases.
  kfuse_perf --general D --out OUT
      times kfuse on each case in strict fp32, TF32 and bfloat16 (device and wall time),
      writes each output to D/<case>-<precision>-kfuse.npy.
  python3 general.py compare --dir D --kfuse-json OUT/<gpu>-<date>-general.json
      times PyTorch eager (strict fp32: cudnn.allow_tf32 = False; TF32: True;
      bfloat16) and torch.compile (TF32 and bfloat16) on the same tensors, checks kfuse's
      outputs against the pipeline in float64 on the GPU (norm-relative
      error), and adds the bytes floor and the TF32 compute floor (the conv's
      multiply-adds at the dense TF32 rate) to the JSON and its Markdown.
  python3 general.py kernels --dir D --out FILE.md [--only NAME] [--bf16]
      torch.compile's kernels per case (TF32, or the pipeline in bfloat16) and
      each one's device time, from torch.profiler: where PyTorch's time goes,
      next to kfuse's steps.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_compare import hold_stream  # (the script's folder is on sys.path)

dev = "cuda"
TF32_DENSE_TFLOPS = 495.0  # H100 SXM / H200 dense TF32 (DESIGN.md section 11)


# ---- the spec's ops in PyTorch ---------------------------------------------------

UNARY = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "silu": F.silu, "mish": F.mish,
    "hardswish": F.hardswish, "exp": torch.exp, "log": torch.log, "neg": torch.neg, "abs": torch.abs,
}
BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
          "min": torch.minimum, "max": torch.maximum, "minimum": torch.minimum, "maximum": torch.maximum}
REDUCE = {
    "sum": lambda y, a, k: torch.sum(y, dim=a, keepdim=k),
    "mean": lambda y, a, k: torch.mean(y, dim=a, keepdim=k),
    "max": lambda y, a, k: torch.amax(y, dim=a, keepdim=k),
    "min": lambda y, a, k: torch.amin(y, dim=a, keepdim=k),
    "logsumexp": lambda y, a, k: torch.logsumexp(y, dim=a, keepdim=k),
}


def pipeline_fn(ops, tensors):
    """The spec's ops as a function of x; tensors[i] holds op i's weight/bias/operand."""
    def fn(y):
        for i, op in enumerate(ops):
            name = op["op"]
            t = tensors.get(i, {})
            if name == "conv_transpose2d":
                y = F.conv_transpose2d(y, t["weight"], t.get("bias"), stride=op.get("stride", 1),
                                       padding=op.get("padding", 0), output_padding=op.get("output_padding", 0),
                                       groups=op.get("groups", 1), dilation=op.get("dilation", 1))
            elif name in REDUCE and "axes" in op:
                y = REDUCE[name](y, tuple(op["axes"]), op.get("keepdim", False))
            elif name in BINARY and "tensor" in op:
                y = BINARY[name](y, t["operand"])
            elif name in BINARY:  # a Python scalar, as a model would write it (no tensor made per call)
                v = op["scalar"]
                y = (torch.clamp(y, max=v) if name in ("min", "minimum") else
                     torch.clamp(y, min=v) if name in ("max", "maximum") else BINARY[name](y, v))
            elif name == "softmax":
                y = torch.softmax(y, dim=op["axis"])
            elif name in ("hardtanh", "clamp"):
                y = torch.clamp(y, op.get("min", -1.0), op.get("max", 1.0))
            elif name == "leaky_relu":
                y = F.leaky_relu(y, op.get("slope", 0.01))
            elif name == "gelu":
                y = F.gelu(y, approximate=op.get("approximate", "none"))
            elif name in UNARY:
                y = UNARY[name](y)
            else:
                raise ValueError(f"op {name} not in general.py's table")
        return y
    return fn


class Pipeline(nn.Module):
    """The spec's ops as a module whose weights and operands are parameters, as a
    model holds them (Inductor treats parameters as inputs and may change their
    layout, which it does not do for tensors a function closes over)."""

    def __init__(self, ops, tensors):
        super().__init__()
        self.ops = ops
        self.names = {}
        for i, t in tensors.items():
            for k, v in t.items():
                name = f"op{i}_{k}"
                self.register_parameter(name, nn.Parameter(v, requires_grad=False))
                self.names.setdefault(i, {})[k] = name

    def forward(self, x):
        tensors = {i: {k: getattr(self, n) for k, n in t.items()} for i, t in self.names.items()}
        return pipeline_fn(self.ops, tensors)(x)


def conv_macs(spec):
    """The conv's multiply-adds: every input element times every weight of its group (no inserted zeros)."""
    n, cin, h, w = spec["input"]["shape"]
    for op in spec["ops"]:
        if op["op"] == "conv_transpose2d":
            _, cout_g, kh, kw = op["weight"]["shape"]
            return n * h * w * cin * cout_g * kh * kw
    return 0


# ---- prepare ------------------------------------------------------------------------

def prepare(args):
    os.makedirs(args.dir, exist_ok=True)
    cases = []
    for fname in sorted(os.listdir(args.specs)):
        if not fname.endswith(".json"):
            continue
        spec = json.load(open(os.path.join(args.specs, fname)))
        name = spec["name"]
        macs = conv_macs(spec)
        torch.manual_seed(spec["input"]["init"].get("seed", 0))
        x = torch.rand(spec["input"]["shape"], dtype=torch.float32)
        np.save(os.path.join(args.dir, f"{name}_x.npy"), x.numpy())
        spec["input"] = {"npy": f"{name}_x.npy"}
        for i, op in enumerate(spec["ops"]):
            if op["op"] == "conv_transpose2d":
                cin, cout_g, kh, kw = op["weight"]["shape"]
                g = op.get("groups", 1)
                m = nn.ConvTranspose2d(cin, cout_g * g, (kh, kw), groups=g)  # PyTorch's default init
                np.save(os.path.join(args.dir, f"{name}_op{i}_weight.npy"), m.weight.detach().numpy())
                np.save(os.path.join(args.dir, f"{name}_op{i}_bias.npy"), m.bias.detach().numpy())
                op["weight"] = {"npy": f"{name}_op{i}_weight.npy"}
                op["bias"] = {"npy": f"{name}_op{i}_bias.npy"}
            elif "tensor" in op:
                np.save(os.path.join(args.dir, f"{name}_op{i}_operand.npy"),
                        torch.randn(op["tensor"]["shape"]).numpy())
                op["tensor"] = {"npy": f"{name}_op{i}_operand.npy"}
        json.dump(spec, open(os.path.join(args.dir, f"{name}.json"), "w"), indent=1)
        cases.append({"name": name, "spec": f"{name}.json", "precisions": ["strict", "tf32", "bf16"], "conv_macs": macs})
    json.dump(cases, open(os.path.join(args.dir, "cases.json"), "w"), indent=1)
    print(f"prepared {len(cases)} cases in {args.dir}")


# ---- compare ------------------------------------------------------------------------

def bench(fn, reps, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        hold_stream()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    return float(np.median(ts))


def rel(out, ref):
    """Norm-relative error in float64; NaN where the NaN patterns differ."""
    out, ref = out.double().flatten(), ref.double().flatten()
    if not torch.equal(torch.isnan(out), torch.isnan(ref)):
        return float("nan")
    m = ~torch.isnan(ref)
    return float((out[m] - ref[m]).norm() / ref[m].norm().clamp_min(1e-300))


def load(d, f):
    return torch.from_numpy(np.load(os.path.join(d, f))).to(dev)


def load_case(d, case):
    """A prepared case: its spec, x and each op's tensors (weight, bias, operand) on the GPU."""
    spec = json.load(open(os.path.join(d, case["spec"])))
    x = load(d, spec["input"]["npy"])
    tensors = {}
    for i, op in enumerate(spec["ops"]):
        for key, part in (("weight", "weight"), ("bias", "bias"), ("tensor", "operand")):
            if key in op:
                tensors.setdefault(i, {})[part] = load(d, op[key]["npy"])
    return spec, x, tensors


def tensors_as(tensors, dtype):
    """Each op's tensors (load_case) in `dtype`."""
    return {i: {k: v.to(dtype) for k, v in t.items()} for i, t in tensors.items()}


def kernels(args):
    """torch.compile's kernels per case (TF32 convolutions, or the pipeline in bfloat16), from
    torch.profiler: each kernel's device time per run, to set next to kfuse's per-step times
    (kfuse_perf with KFUSE_CUDA_GRAPHS=0)."""
    from torch.profiler import ProfilerActivity, profile
    torch.backends.cudnn.allow_tf32 = True
    precision = "bfloat16" if args.bf16 else "TF32"
    lines = [f"# torch.compile's kernels ({precision}), {torch.cuda.get_device_name()}, PyTorch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}", "",
             f"torch.profiler over {args.reps} runs after a warm-up, no L2 flush; device ms per run.", ""]
    for case in json.load(open(os.path.join(args.dir, "cases.json"))):
        if args.only and args.only not in case["name"]:
            continue
        spec, x, tensors = load_case(args.dir, case)
        if args.bf16:
            x = x.bfloat16()
            tensors = tensors_as(tensors, torch.bfloat16)
        torch._dynamo.reset()
        cfn = torch.compile(Pipeline(spec["ops"], tensors))
        with torch.no_grad():
            for _ in range(3):
                cfn(x)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.reps):
                    cfn(x)
                torch.cuda.synchronize()
        per = {}
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                per[e.name] = per.get(e.name, 0.0) + e.time_range.elapsed_us() / 1e3 / args.reps
        lines += [f"## {case['name']}", "", "| kernel | ms per run |", "|---|---|"]
        lines += [f"| `{k[:100]}` | {v:.3f} |" for k, v in sorted(per.items(), key=lambda kv: -kv[1])]
        lines += [f"| total | {sum(per.values()):.3f} |", ""]
        print("\n".join(lines[-len(per) - 5:]), flush=True)
        del x, tensors
        torch.cuda.empty_cache()
    open(args.out, "w").write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def compare(args):
    kj = json.load(open(args.kfuse_json))
    by_name = {c["name"]: c for c in kj["cases"]}
    copy_gbps = kj["copy_GBps"]
    rows = []
    for case in json.load(open(os.path.join(args.dir, "cases.json"))):
        name = case["name"]
        if not any(f"{name}-{p}" in by_name for p in case["precisions"]):
            continue  # not timed by kfuse_perf (--only)
        spec, x, tensors = load_case(args.dir, case)
        fn = Pipeline(spec["ops"], tensors)
        with torch.no_grad():
            ref = pipeline_fn(spec["ops"], tensors_as(tensors, torch.float64))(x.double())
            torch.backends.cudnn.allow_tf32 = False
            eager_strict = bench(lambda: fn(x), args.reps)
            strict_err = rel(fn(x), ref)
            torch.backends.cudnn.allow_tf32 = True
            eager_tf32 = bench(lambda: fn(x), args.reps)
            tf32_err = rel(fn(x), ref)
            # bfloat16: the same pipeline on bfloat16 tensors (fp32 accumulation inside cuDNN).
            xb = x.bfloat16()
            fnb = Pipeline(spec["ops"], tensors_as(tensors, torch.bfloat16))
            eager_bf16 = bench(lambda: fnb(xb), args.reps)
            bf16_err = rel(fnb(xb).float(), ref)
            compiled = {}
            if not args.no_compile:
                # Each case compiles afresh: past dynamo's cache limit (8 graphs per code object, and every
                # case is the same forward()) torch.compile would quietly run the later cases eagerly.
                torch._dynamo.reset()
                t0 = time.time()
                cfn = torch.compile(fn)
                cfn(x)  # TF32 convolutions (the default); strict fp32 is compared with eager
                compiled["tf32"] = bench(lambda: cfn(x), args.reps)
                cfnb = torch.compile(fnb)
                cfnb(xb)
                compiled["bf16"] = bench(lambda: cfnb(xb), args.reps)
                compile_s = time.time() - t0
                torch.backends.cudnn.allow_tf32 = True
            # The same with torch.backends.cudnn.benchmark = True (cuDNN's algorithm measured, as kfuse
            # measures its own at plan time): the strongest PyTorch peer; the compiled graphs are reused.
            torch.backends.cudnn.benchmark = True
            bench_on = {}
            torch.backends.cudnn.allow_tf32 = False
            bench_on["eager_strict"] = bench(lambda: fn(x), args.reps)
            torch.backends.cudnn.allow_tf32 = True
            bench_on["eager_tf32"] = bench(lambda: fn(x), args.reps)
            bench_on["eager_bf16"] = bench(lambda: fnb(xb), args.reps)
            if compiled:
                bench_on["compile_tf32"] = bench(lambda: cfn(x), args.reps)
                bench_on["compile_bf16"] = bench(lambda: cfnb(xb), args.reps)
            torch.backends.cudnn.benchmark = False
            macs = case["conv_macs"]
            for prec in case["precisions"]:
                label = f"{name}-{prec}"
                c = by_name.get(label)
                if c is None:
                    continue
                torch_ms = {"eager_strict_ms": eager_strict, "eager_tf32_ms": eager_tf32, "eager_bf16_ms": eager_bf16,
                            "eager_strict_rel_err": strict_err, "eager_tf32_rel_err": tf32_err,
                            "eager_bf16_rel_err": bf16_err}
                if compiled:
                    torch_ms.update({"compile_tf32_ms": compiled["tf32"], "compile_bf16_ms": compiled["bf16"],
                                     "compile_s": compile_s})
                torch_ms.update({f"{k}_ms_cudnn_benchmark": v for k, v in bench_on.items()})
                c["torch"] = torch_ms
                c["conv_macs"] = macs
                c["tf32_compute_floor_ms"] = 2.0 * macs / (TF32_DENSE_TFLOPS * 1e12) * 1e3
                out_path = os.path.join(args.dir, f"{label}-kfuse.npy")
                if "refused" not in c and os.path.exists(out_path):
                    c["rel_err_vs_fp64"] = rel(load(args.dir, f"{label}-kfuse.npy").view(ref.shape), ref)
                rows.append(c)
                print(label, {k: c.get(k) for k in ("device_ms_median", "wall_ms_median", "rel_err_vs_fp64")}, torch_ms,
                      flush=True)
        del x, tensors, ref
        torch.cuda.empty_cache()
    json.dump(kj, open(args.kfuse_json, "w"), indent=2)
    md = os.path.splitext(args.kfuse_json)[0] + ".md"
    with open(md, "a") as f:
        f.write("\n## The benchmark set (specs/general) next to PyTorch, same process, same tensors\n\n"
                f"PyTorch {torch.__version__}; medians of {args.reps} runs; bytes floor = floor bytes / copy bandwidth "
                f"({copy_gbps:.0f} GB/s); TF32 floor = 2 x the conv's multiply-adds / {TF32_DENSE_TFLOPS:.0f} TFLOP/s. "
                "kfuse strict is compared with eager strict fp32, kfuse TF32 with torch.compile (TF32 convolutions, "
                "PyTorch's default). Errors: norm-relative against the pipeline in float64.\n\n"
                "PyTorch columns: default settings / with torch.backends.cudnn.benchmark = True (cuDNN's algorithm "
                "measured, as kfuse measures its own at plan time); the ratios are against the faster of the two.\n\n"
                "kfuse steps: each step's median device time (the conv, then each epilogue stage).\n\n"
                "| case | precision | strategy | kfuse device ms | kfuse steps ms | wall ms | bytes floor ms | TF32 floor ms "
                "| eager (same precision) | compile (same precision) | kfuse / eager | kfuse / compile | rel err |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for c in rows:
            t = c["torch"]
            if "refused" in c:
                f.write(f"| {c['name']} | {c['name'].rsplit('-', 1)[1]} | refused: {c['refused'][:120]} ||||||||||||\n")
                continue
            prec = c["precision"]
            nan = float("nan")
            eager, eager_b = t[f"eager_{prec}_ms"], t.get(f"eager_{prec}_ms_cudnn_benchmark", nan)
            comp, comp_b = t.get(f"compile_{prec}_ms", nan), t.get(f"compile_{prec}_ms_cudnn_benchmark", nan)
            best = lambda a, b: min(v for v in (a, b) if v == v) if (a == a or b == b) else nan
            steps = " + ".join(f"{s:.3f}" for s in c.get("step_device_ms_median", []))
            # The plan's layout of Y, as its description names it.
            strategy = c["strategy"] + (", Y NHWC" if "channels-last (NHWC)" in c.get("describe", "") else "")
            f.write(f"| {c['name'].rsplit('-', 1)[0]} | {prec} | {strategy} | {c['device_ms_median']:.3f} | "
                    f"{steps} | {c['wall_ms_median']:.3f} | {c['floor_ms']:.3f} | {c['tf32_compute_floor_ms']:.3f} | "
                    f"{eager:.3f} / {eager_b:.3f} | {comp:.3f} / {comp_b:.3f} | "
                    f"{c['device_ms_median'] / best(eager, eager_b):.2f} | {c['device_ms_median'] / best(comp, comp_b):.2f} | "
                    f"{c.get('rel_err_vs_fp64', float('nan')):.2e} |\n")
    print(f"merged into {args.kfuse_json} and {md}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--specs", required=True)
    p.add_argument("--dir", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--dir", required=True)
    c.add_argument("--kfuse-json", required=True)
    c.add_argument("--reps", type=int, default=20)
    c.add_argument("--no-compile", action="store_true")
    k = sub.add_parser("kernels")
    k.add_argument("--dir", required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--only", default="")
    k.add_argument("--reps", type=int, default=10)
    k.add_argument("--bf16", action="store_true", help="the pipeline in bfloat16 (default: float32, TF32 convolutions)")
    args = ap.parse_args()
    {"prepare": prepare, "compare": compare, "kernels": kernels}[args.cmd](args)


if __name__ == "__main__":
    main()
