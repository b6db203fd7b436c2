#!/usr/bin/env python3
"""Checks kfuse's spack files without spack (CI runs it from .ci/run).

spack/packages/kfuse/package.py is parsed with the ast module (never
imported): every variant (its own and CudaPackage's cuda/cuda_arch) must map
to a CMake option in cmake_args, every CMake variable cmake_args sets must be
an option or cache variable of some CMakeLists.txt / *.cmake of the
repository (or one of CMake's own CMAKE_* variables), and every `when=`
condition may name only variants the recipe has. spack.yaml must name the
repository `./spack`, develop kfuse from the checkout, and ask for kfuse
with variants the recipe has.

Exit status 0 when all holds, 1 otherwise (each problem printed).
"""
import ast
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "spack", "packages", "kfuse", "package.py")
ENV = os.path.join(ROOT, "spack.yaml")

# Variants that mixins add (spack's build_systems/cuda.py, rocm.py).
MIXIN_VARIANTS = {"CudaPackage": {"cuda", "cuda_arch"}, "ROCmPackage": {"rocm", "amdgpu_target"}}


def cmake_variables(root):
    """Names of options and cache variables declared by the repository's CMake files."""
    patterns = [
        re.compile(r"\b(?:option|cmake_dependent_option)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)", re.I),
        re.compile(r"\bset\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\b[^()]*?\bCACHE\b", re.I | re.S),
        re.compile(r"\bfind_(?:path|library|program|file)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)", re.I),
    ]
    names, files = {}, []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "build", "_deps")))
        for f in filenames:
            if f == "CMakeLists.txt" or f.endswith(".cmake"):
                files.append(os.path.join(dirpath, f))
    for path in files:
        with open(path, encoding="utf-8") as fh:
            text = re.sub(r"#[^\n]*", "", fh.read())  # comments out
        for p in patterns:
            for m in p.finditer(text):
                names.setdefault(m.group(1), os.path.relpath(path, root))
    return names


def call_name(node):
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def const_str(node):
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def strings_in(node):
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def variant_tokens(spec):
    """Variant names a spec string sets on the package itself (before any ^dependency)."""
    own = spec.split("^")[0]
    names = set(re.findall(r"[+~]([A-Za-z_][\w-]*)", own))
    names |= set(re.findall(r"([A-Za-z_][\w-]*)\s*=", own))
    return names


def main():
    problems = []
    with open(RECIPE, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), filename=RECIPE)

    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    if len(classes) != 1:
        print(f"{RECIPE}: expected one package class, found {len(classes)}")
        return 1
    cls = classes[0]
    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
    if "CMakePackage" not in bases:
        problems.append(f"class {cls.name} does not derive from CMakePackage")

    variants = {}  # name -> where it comes from
    for base in bases:
        for v in MIXIN_VARIANTS.get(base, ()):
            variants[v] = base
    directive_calls = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "variant" and node.args and const_str(node.args[0]):
                variants[const_str(node.args[0])] = "variant()"
            if node.func.id in ("variant", "depends_on", "conflicts", "requires", "provides", "patch"):
                directive_calls.append(node)

    # when= conditions (and conflicts' spec) may name only known variants.
    for call in directive_calls:
        specs = [kw.value for kw in call.keywords if kw.arg == "when"]
        if call.func.id == "conflicts" and call.args:
            specs.append(call.args[0])
        for s in specs:
            if isinstance(s, ast.JoinedStr):  # f"+cuda cuda_arch={_arch}": check the literal parts
                text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in s.values)
            else:
                text = const_str(s)
            if text is None:
                continue
            for v in variant_tokens(text):
                if v not in variants:
                    problems.append(f"line {call.lineno}: {call.func.id}(...) names variant '{v}', which the recipe does not have")

    cmake_args = next((n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "cmake_args"), None)
    if cmake_args is None:
        print(f"{RECIPE}: no cmake_args()")
        return 1

    mapping = {}  # cmake variable -> set of variants
    for node in ast.walk(cmake_args):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = call_name(node)
        var = const_str(node.args[0])
        if name == "define_from_variant":
            if var is None or len(node.args) < 2 or const_str(node.args[1]) is None:
                problems.append(f"line {node.lineno}: define_from_variant needs literal names")
                continue
            v = const_str(node.args[1])
            if v not in variants:
                problems.append(f"line {node.lineno}: define_from_variant('{var}', '{v}'): no variant '{v}'")
            mapping.setdefault(var, set()).add(v)
        elif name == "define":
            if var is None:
                problems.append(f"line {node.lineno}: define() needs a literal CMake variable name")
                continue
            used = set()
            for s in strings_in(node.args[1]) if len(node.args) > 1 else []:
                if s in variants:
                    used.add(s)
                used |= {t for t in re.findall(r"[+~]([A-Za-z_][\w-]*)", s) if t in variants}
            mapping.setdefault(var, set()).update(used)

    declared = cmake_variables(ROOT)
    print(f"recipe: {os.path.relpath(RECIPE, ROOT)} (class {cls.name}); CMake options and cache variables found: {len(declared)}")
    for var in sorted(mapping):
        vs = ", ".join(sorted(mapping[var])) or "-"
        if var in declared:
            where = declared[var]
        elif var.startswith("CMAKE_"):
            where = "CMake"
        else:
            where = "MISSING"
            problems.append(f"cmake_args sets {var}, which no CMakeLists.txt or *.cmake declares (option() or a cache variable)")
        print(f"  {var:28s} <- {vs:12s} ({where})")
    mapped = set().union(*mapping.values()) if mapping else set()
    for v in sorted(variants):
        if v not in mapped:
            problems.append(f"variant '{v}' ({variants[v]}) is not mapped to any CMake option in cmake_args")

    # spack.yaml: the environment uses this repository and develops kfuse from the checkout.
    with open(ENV, encoding="utf-8") as fh:
        env = fh.read()
    if not re.search(r"^\s*repos:\s*\[?\s*\.?/?spack\s*\]?\s*$|^\s*-\s*\.?/?spack\s*$", env, re.M):
        problems.append("spack.yaml: no `repos: [./spack]`")
    dev = re.search(r"^\s*develop:\s*\n\s+kfuse:\s*\n((?:\s{6,}\S.*\n?)+)", env, re.M)
    if not dev:
        problems.append("spack.yaml: no `develop:` entry for kfuse")
    else:
        path = re.search(r"path:\s*(\S+)", dev.group(1))
        if not path or not os.path.isfile(os.path.join(ROOT, path.group(1), "CMakeLists.txt")):
            problems.append("spack.yaml: develop: kfuse: path is not the checkout")
    specs = re.findall(r"^\s*-\s*(kfuse\b[^\n#]*)", env, re.M)
    if not specs:
        problems.append("spack.yaml: kfuse is not among the specs")
    for s in specs:
        for v in variant_tokens(s):
            if v not in variants:
                problems.append(f"spack.yaml: '{s.strip()}' names variant '{v}', which the recipe does not have")

    if problems:
        print("FAILED:")
        for p in problems:
            print("  " + p)
        return 1
    print(f"OK: {len(variants)} variants ({', '.join(sorted(variants))}), each mapped; every CMake variable exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
