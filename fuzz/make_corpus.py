#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz targets (fuzz/corpus/<target>/).

Standard library only (no NumPy): .npy files are written byte by byte, as
NumPy's format description says. Run from anywhere; rewrites these seeds and
leaves the others alone: the files named found-<sha1> are inputs the fuzzers
reached (a sample of a libFuzzer -merge=1 of long runs), kept as seeds so that
CI's 60 s runs start deep.
"""
import json
import os
import random
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def out_dir(target):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    return d


def npy_bytes(descr, shape, values=None, major=1, fortran=False, pad_to=64, raw_header=None):
    shape_txt = "(" + "".join(f"{e}, " for e in shape).rstrip(" ")
    if len(shape) != 1:
        shape_txt = shape_txt.rstrip(",")
    shape_txt += ")"
    header = raw_header if raw_header is not None else \
        "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", shape_txt)
    pre = 10 if major == 1 else 12
    total = pre + len(header) + 1
    header += " " * ((-total) % pad_to) + "\n"
    b = b"\x93NUMPY" + bytes([major, 0])
    b += struct.pack("<H" if major == 1 else "<I", len(header))
    b += header.encode("latin-1")
    n = 1
    for e in shape:
        n *= e
    fmt = {"<f4": "<f", "<f8": "<d"}.get(descr, "<f")
    vals = values if values is not None else [0.25 * i - 1.0 for i in range(n)]
    for v in vals:
        b += struct.pack(fmt, v)
    return b


def write(target, name, data):
    with open(os.path.join(out_dir(target), name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def npy_corpus():
    inf, nan = float("inf"), float("nan")
    write("npy", "v1_f4_2x3", npy_bytes("<f4", [2, 3]))
    write("npy", "v1_f8_scalar", npy_bytes("<f8", []))
    write("npy", "v1_f4_vector", npy_bytes("<f4", [5]))
    write("npy", "v1_f8_empty", npy_bytes("<f8", [0, 3]))
    write("npy", "v2_f4_4d", npy_bytes("<f4", [1, 2, 2, 2], major=2))
    write("npy", "v3_f8_specials", npy_bytes("<f8", [4], values=[inf, -inf, nan, -0.0], major=3))
    write("npy", "fortran_order", npy_bytes("<f4", [2, 2], fortran=True))
    write("npy", "int32", npy_bytes("<i4", [3]))
    write("npy", "truncated_data", npy_bytes("<f8", [3, 3])[:-5])
    write("npy", "bad_magic", b"\x93NUMPZ\x01\x00" + npy_bytes("<f4", [1])[8:])
    write("npy", "python2_long", npy_bytes("<f4", [2], raw_header="{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }"))
    write("npy", "huge_shape", npy_bytes("<f4", [1], raw_header="{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }"))
    write("npy", "rank9", npy_bytes("<f4", [1] * 9))


def spec_corpus():
    for sub in ("specs/small", "specs"):
        d = os.path.join(ROOT, sub)
        for name in sorted(os.listdir(d)):
            if name.endswith(".json"):
                shutil.copy(os.path.join(d, name), os.path.join(out_dir("spec"), sub.replace("/", "_") + "_" + name))
    conv = {"op": "conv_transpose2d", "weight": {"npy": "w.npy"}, "bias": {"npy": "b.npy"},
            "stride": [2, 1], "padding": 1, "output_padding": [1, 0], "dilation": 1, "groups": 1}
    seeds = {
        "npy_input.json": {"input": {"npy": "x.npy"}, "ops": [conv, {"op": "mean", "axes": [2, 3], "keepdim": True},
                                                             {"op": "softmax", "axis": 1}]},
        "data_operands.json": {"input": {"shape": [2, 3, 4], "dtype": "float64", "init": {"kind": "randn", "seed": 5}},
                               "ops": [{"op": "add", "tensor": {"shape": [4], "data": [1, "inf", "-inf", "nan"]}},
                                       {"op": "max", "axes": -1}, {"op": "gelu", "approximate": "tanh"},
                                       {"op": "clamp", "min": -1, "max": "inf"}, {"op": "logsumexp", "axes": [0]}]},
        "half.json": {"input": {"shape": [1, 2, 3, 3], "dtype": "float16", "init": {"kind": "constant", "value": 1e30}},
                      "ops": [{"op": "conv_transpose2d", "weight": {"shape": [2, 2, 1, 1], "init": {"kind": "uniform", "seed": 1, "low": -1, "high": 1}},
                               "groups": 2}, {"op": "sum", "axes": [2, 3]}]},
        "bad_npy.json": {"input": {"npy": "bad.npy"}, "ops": [{"op": "relu"}]},
        "zero_batch.json": {"input": {"shape": [0, 2, 3, 3], "init": {"kind": "uniform", "seed": 0}},
                            "ops": [{"op": "conv_transpose2d", "weight": {"shape": [2, 4, 3, 3], "init": {"kind": "conv_default", "seed": 1}}},
                                    {"op": "mean", "axes": [2, 3]}, {"op": "min", "axes": [0]}]},
    }
    for name, obj in seeds.items():
        write("spec", name, json.dumps(obj, indent=1))


def pipeline_corpus():
    rng = random.Random(20261123)
    for i in range(48):
        n = rng.choice([16, 24, 32, 48, 64, 96])
        write("pipeline", "random_%02d" % i, bytes(rng.randrange(256) for _ in range(n)))


if __name__ == "__main__":
    npy_corpus()
    spec_corpus()
    pipeline_corpus()
