#!/usr/bin/env python3
"""A/B of kfuse builds or device-header variants on a prepared benchmark set.

Runs `kfuse_perf --general` on a set `general.py prepare` wrote, once per
variant and round, alternating the order of the variants every round (a GPU
that warms up favours no one), and writes the medians over the rounds side
by side:

    python3 perf/gpu/general.py prepare --specs specs/general --dir /tmp/gen
    python3 perf/gpu/ab.py --gen /tmp/gen --out /tmp/ab --rounds 2 old=/tmp/old-dist new=build-cuda/dist
    python3 perf/gpu/ab.py --bin build-cuda/dist --gen /tmp/gen --out /tmp/ab old=/tmp/h_old new=$PWD

A variant is NAME=DIR[,VAR=VALUE...]. A DIR holding kfuse_perf is a build
(its own kernels and headers: host changes need this). A DIR holding
backends/cuda/ is a header variant run on --bin's kfuse_perf: the kernels kfuse
compiles at plan time (NVRTC: the fused conv with the plan's chains, the
epilogue kernels) read their headers from KFUSE_CUDA_JIT_HEADERS
(backends/cuda/jit.cpp), so a kernel change is measured without a rebuild (a
checkout, or `git archive <rev> include backends | tar x -C DIR`; the
library's built-in kernels stay the binary's). The settings after DIR are
that variant's environment, a knob against its default:
`interpreted=build-cuda/dist,KFUSE_CUDA_JIT=0 compiled=build-cuda/dist`
(every run has KFUSE_CUDA_GRAPHS=0, for the per-step times).
The first variant is the baseline of the ratios. Writes OUT/ab.json and
OUT/ab.md (device, date, each variant's commit, each case's strategy and
device ms per variant), and each run's kfuse_perf files under
OUT/<name>-<round>/.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys


def run_variant(args, name, path, settings, rnd):
    out = os.path.join(args.out, f"{name}-{rnd}")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, KFUSE_CUDA_GRAPHS="0")
    if is_build(path):
        env.pop("KFUSE_CUDA_JIT_HEADERS", None)
        binary = path
    else:
        env["KFUSE_CUDA_JIT_HEADERS"] = os.path.abspath(path)
        binary = args.bin
    env.update(settings)
    cmd = [os.path.join(binary, "kfuse_perf"), "--general", args.gen, "--out", out]
    if args.only:
        cmd += ["--only", args.only]
    with open(os.path.join(out, "log.txt"), "w") as log:
        try:
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            sys.exit(f"ab: {name} round {rnd}: kfuse_perf ran past --timeout {args.timeout} s (see {out}/log.txt)")
    if rc != 0:
        sys.exit(f"ab: {name} round {rnd}: kfuse_perf exited {rc} (see {out}/log.txt)")
    files = glob.glob(os.path.join(out, "*-general.json"))
    if len(files) != 1:
        sys.exit(f"ab: {name} round {rnd}: expected one *-general.json in {out}, found {len(files)}")
    with open(files[0]) as f:
        return json.load(f)


def is_build(path):
    return os.path.isfile(os.path.join(path, "kfuse_perf"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", help="folder holding the kfuse_perf that runs the header variants")
    ap.add_argument("--gen", required=True, help="folder general.py prepare wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", help="kfuse_perf's --only: the cases whose name contains it")
    ap.add_argument("--timeout", type=int, default=600, help="seconds a kfuse_perf run may take")
    ap.add_argument("variants", nargs="+", help="NAME=DIR[,VAR=VALUE...]")
    args = ap.parse_args()
    variants = []
    for v in args.variants:
        name, sep, rest = v.partition("=")
        path, *sets = rest.split(",")
        settings = {}
        for kv in sets:
            var, eq, value = kv.partition("=")
            if not var or not eq:
                sys.exit(f"ab: variant '{v}': '{kv}' after DIR is not VAR=VALUE")
            settings[var] = value
        if not sep or not name or not (is_build(path) or os.path.isdir(os.path.join(path, "backends", "cuda"))):
            sys.exit(f"ab: variant '{v}': expected NAME=DIR[,VAR=VALUE...] with DIR/kfuse_perf or DIR/backends/cuda")
        if not is_build(path) and not (args.bin and is_build(args.bin)):
            sys.exit(f"ab: variant '{v}' is a header variant: --bin must name a folder holding kfuse_perf")
        variants.append((name, path, settings))
    if len({v[0] for v in variants}) != len(variants):
        sys.exit("ab: variant names must differ")
    if args.rounds < 1:
        sys.exit(f"ab: --rounds {args.rounds}: at least 1")

    runs = {v[0]: [] for v in variants}
    for rnd in range(1, args.rounds + 1):
        order = variants if rnd % 2 else list(reversed(variants))
        for name, path, settings in order:
            runs[name].append(run_variant(args, name, path, settings, rnd))
            print(f"ab: {name} round {rnd} done", flush=True)

    first = runs[variants[0][0]][0]
    cases = [c["name"] for c in first["cases"]]
    table = {}
    for name, *_ in variants:
        for case in cases:
            ms = [c["device_ms_median"] for r in runs[name] for c in r["cases"] if c["name"] == case]
            if len(ms) != args.rounds:
                sys.exit(f"ab: case {case}: {name} has it in {len(ms)} of {args.rounds} rounds")
            strat = {c["strategy"] for r in runs[name] for c in r["cases"] if c["name"] == case}
            table.setdefault(case, {})[name] = {"device_ms": statistics.median(ms), "rounds": ms,
                                                "strategy": "/".join(sorted(strat))}
    device = first["device"]["name"] if isinstance(first["device"], dict) else first["device"]
    # A build's commit is what its kfuse_perf says; a header variant runs --bin's build.
    described = {n: {"kind": "build" if is_build(p) else "headers", "dir": os.path.abspath(p), "env": e,
                     "commit": runs[n][0]["commit"]} for n, p, e in variants}
    meta = {"device": device, "date": first["date"], "rounds": args.rounds, "only": args.only,
            "variants": described}
    with open(os.path.join(args.out, "ab.json"), "w") as f:
        json.dump({"device": device, "date": meta["date"], "commit": first["commit"], "meta": meta,
                   "cases": table}, f, indent=1)
    base = variants[0][0]
    said = ", ".join(f"{n} = {d['kind']} {d['dir']}" + "".join(f" {k}={v}" for k, v in d["env"].items()) +
                     f" (commit {d['commit']})" for n, d in described.items())
    lines = [f"# A/B: {device}, {meta['date']}", "",
             f"Device ms (median over {args.rounds} rounds of kfuse_perf's medians, variants alternating; "
             f"ratios to {base}). Variants: {said}", "",
             "| case | " + " | ".join(v[0] for v in variants) + " |",
             "|---|" + "---|" * len(variants)]
    for case in cases:
        b = table[case][base]["device_ms"]
        cells = []
        for name, *_ in variants:
            t = table[case][name]
            cells.append(f"{t['device_ms']:.4f} {t['strategy']}" + ("" if name == base else f" ({t['device_ms'] / b:.3f})"))
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "ab.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
