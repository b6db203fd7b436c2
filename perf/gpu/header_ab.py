#!/usr/bin/env python3
"""A/B of device-header variants on one binary, without a rebuild.

The kernels kfuse compiles at plan time (NVRTC: the fused conv with the plan's
chains, the epilogue kernels) read their headers from KFUSE_CUDA_JIT_HEADERS
when it is set (backends/cuda/jit.cpp). This runs `kfuse_perf --general` on a
prepared set once per variant and round, alternating the variants (a GPU that
warms up favours no one), and writes the medians over the rounds side by side:

    python3 perf/gpu/general.py prepare --specs specs/general --dir /tmp/gen
    python3 perf/gpu/header_ab.py --bin build-cuda/dist --gen /tmp/gen --out /tmp/ab \\
        --rounds 2 old=/tmp/h_old new=$PWD

A variant is NAME=DIR, DIR holding include/ and backends/cuda/ (a checkout, or
`git archive <rev> include backends | tar x -C DIR`). The first is the
baseline of the ratios. Writes OUT/ab.json and OUT/ab.md (device, date, each
case's strategy and device ms per variant), and each run's kfuse_perf files
under OUT/<name>-<round>/. Only the plan-time-compiled kernels change: the
library's built-in kernels are the binary's.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys


def run_variant(args, name, headers, rnd):
    out = os.path.join(args.out, f"{name}-{rnd}")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, KFUSE_CUDA_JIT_HEADERS=os.path.abspath(headers), KFUSE_CUDA_GRAPHS="0")
    cmd = [os.path.join(args.bin, "kfuse_perf"), "--general", args.gen, "--out", out]
    with open(os.path.join(out, "log.txt"), "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout).returncode
    if rc != 0:
        sys.exit(f"header_ab: {name} round {rnd}: kfuse_perf exited {rc} (see {out}/log.txt)")
    files = glob.glob(os.path.join(out, "*-general.json"))
    if len(files) != 1:
        sys.exit(f"header_ab: {name} round {rnd}: expected one *-general.json in {out}, found {len(files)}")
    with open(files[0]) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="folder holding kfuse_perf")
    ap.add_argument("--gen", required=True, help="folder general.py prepare wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=600, help="seconds a kfuse_perf run may take")
    ap.add_argument("variants", nargs="+", help="NAME=DIR")
    args = ap.parse_args()
    variants = []
    for v in args.variants:
        name, sep, path = v.partition("=")
        if not sep or not name or not os.path.isdir(os.path.join(path, "backends", "cuda")):
            sys.exit(f"header_ab: variant '{v}': expected NAME=DIR with DIR/backends/cuda")
        variants.append((name, path))
    if len({n for n, _ in variants}) != len(variants):
        sys.exit("header_ab: variant names must differ")
    if args.rounds < 1:
        sys.exit(f"header_ab: --rounds {args.rounds}: at least 1")

    runs = {n: [] for n, _ in variants}
    for rnd in range(1, args.rounds + 1):
        order = variants if rnd % 2 else list(reversed(variants))
        for name, path in order:
            runs[name].append(run_variant(args, name, path, rnd))
            print(f"header_ab: {name} round {rnd} done", flush=True)

    first = runs[variants[0][0]][0]
    cases = [c["name"] for c in first["cases"]]
    table = {}
    for name, _ in variants:
        for case in cases:
            ms = [c["device_ms_median"] for r in runs[name] for c in r["cases"] if c["name"] == case]
            strat = {c["strategy"] for r in runs[name] for c in r["cases"] if c["name"] == case}
            table.setdefault(case, {})[name] = {"device_ms": statistics.median(ms), "rounds": ms,
                                                "strategy": "/".join(sorted(strat))}
    device = first["device"]["name"] if isinstance(first["device"], dict) else first["device"]
    meta = {"device": device, "date": first["date"], "binary_commit": first["commit"],
            "rounds": args.rounds, "variants": {n: os.path.abspath(p) for n, p in variants}}
    with open(os.path.join(args.out, "ab.json"), "w") as f:
        json.dump({"device": device, "date": meta["date"], "commit": meta["binary_commit"], "meta": meta,
                   "cases": table}, f, indent=1)
    base = variants[0][0]
    lines = [f"# Header A/B: {meta['device']}, {meta['date']}, binary {meta['binary_commit']}", "",
             f"Device ms (median over {args.rounds} rounds of kfuse_perf's medians, variants alternating; "
             f"ratios to {base}). Variants: " + ", ".join(f"{n} = {p}" for n, p in meta["variants"].items()), "",
             "| case | " + " | ".join(n for n, _ in variants) + " |",
             "|---|" + "---|" * len(variants)]
    for case in cases:
        b = table[case][base]["device_ms"]
        cells = []
        for name, _ in variants:
            t = table[case][name]
            cells.append(f"{t['device_ms']:.4f} {t['strategy']}" + ("" if name == base else f" ({t['device_ms'] / b:.3f})"))
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "ab.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
