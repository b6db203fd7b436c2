#!/usr/bin/env bash
# The GPU driver: tests, sanitizers, the perf suite, PyTorch side by side, ncu.
#
#   perf/gpu/run.sh [--bin DIR] [--out DIR] [--tests] [--sanitize] [--perf] [--torch] [--ncu] [--all]
#
# DIR holds kfuse_cuda_tests, kfuse_perf and lib/ (shared libraries built
# elsewhere, e.g. Kokkos); default build-cuda/dist (see perf/gpu/README.md).
# Results go to OUT (default $OUT, else perf/results): logs, the perf JSON/MD,
# the ncu CSV. cuDNN is taken from /usr/local/cuda/lib64 or PyTorch's wheel.
#
# --ncu collects DESIGN.md section 9's five metrics per kernel of the seed
# problems with `ncu --clock-control none` (the clocks as the card runs them).
set -u
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$ROOT/build-cuda/dist"
RES="${OUT:-$ROOT/perf/results}"
TESTS=0 SAN=0 PERF=0 TORCH=0 NCU=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift ;;
    --out) RES="$2"; shift ;;
    --tests) TESTS=1 ;;
    --sanitize) SAN=1 ;;
    --perf) PERF=1 ;;
    --torch) TORCH=1 ;;
    --ncu) NCU=1 ;;
    --all) TESTS=1 SAN=1 PERF=1 TORCH=1 NCU=1 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$RES"
CUDNN_LIB="$(python3 -c 'import nvidia.cudnn as c, os; print(os.path.join(c.__path__[0], "lib"))' 2>/dev/null || true)"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:$BIN/lib:${CUDNN_LIB}:${LD_LIBRARY_PATH:-}"
export KFUSE_GIT_COMMIT="${KFUSE_GIT_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$RES/gpu.txt"
rc=0

if [ $TESTS = 1 ]; then
  echo "== kfuse_cuda_tests"
  timeout "${T_TESTS:-200}" "$BIN/kfuse_cuda_tests" --gtest_brief=1 2>&1 | tee "$RES/tests.log" | tail -40
  t=${PIPESTATUS[0]}; echo "kfuse_cuda_tests rc=$t"; [ "$t" = 0 ] || rc=1
fi

if [ $PERF = 1 ] || [ $TORCH = 1 ]; then
  echo "== kfuse_perf"
  EXP=/tmp/kfuse_export; mkdir -p $EXP
  ARGS=(--specs "$ROOT/specs" --out "$RES" --export $EXP)
  timeout "${T_PERF:-240}" "$BIN/kfuse_perf" "${ARGS[@]}" 2>&1 | tee "$RES/perf.log"
  [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  JSON="$(ls -t "$RES"/*.json 2>/dev/null | grep -v ncu | head -1)"
  if [ $TORCH = 1 ] && [ -n "$JSON" ]; then
    echo "== torch_compare.py"
    PYTHONUNBUFFERED=1 timeout "${T_TORCH:-200}" python3 "$ROOT/perf/gpu/torch_compare.py" --export $EXP --kfuse-json "$JSON" ${TORCH_ARGS:-} 2>&1 | tee "$RES/torch.log" | grep -v "^\s*$" | tail -20
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  fi
  [ -n "$JSON" ] && cat "${JSON%.json}.md"
fi

if [ $SAN = 1 ]; then
  # A subset with few iterations: the sanitizers slow kernels down 10-100x.
  SANFILTER=${SANFILTER:-'CudaFold.RandomConfigsFp32AndFp64:CudaFold.LayoutsAndChunks:CudaFold.LongTailRow:CudaEpilogue.RandomConfigsCudnnAndGather:CudaBackend.HalfPipelinesRunInsideTheConvNotAsEpilogueStages'}
  # (CudaBackend.DeviceErrorsNameTheCall asks for 4 EiB on purpose: memcheck would report that cudaMalloc.)
  export KFUSE_CUDA_TEST_ITERS=${KFUSE_CUDA_TEST_ITERS:-3}
  for tool in ${SAN_TOOLS:-memcheck racecheck}; do
    echo "== compute-sanitizer --tool $tool"
    timeout "${T_SAN:-150}" compute-sanitizer --tool $tool --error-exitcode 9 "$BIN/kfuse_cuda_tests" --gtest_filter="$SANFILTER" \
      > "$RES/sanitize_$tool.log" 2>&1
    t=$?; tail -5 "$RES/sanitize_$tool.log"; echo "$tool rc=$t"; [ "$t" = 0 ] || rc=1
  done
  unset KFUSE_CUDA_TEST_ITERS
fi

if [ $NCU = 1 ]; then
  echo "== ncu"
  METRICS=sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sector_hit_rate.pct,gpu__time_duration.sum
  timeout "${T_NCU:-150}" ncu --clock-control none --metrics $METRICS --csv --kernel-name regex:'fold_|epi_|conv_transpose_gather' --target-processes all \
    "$BIN/kfuse_perf" --specs "$ROOT/specs" --out /tmp --ncu-mode --only convt \
    > "$RES/ncu.csv" 2> "$RES/ncu.err"
  t=$?; echo "ncu rc=$t"; tail -3 "$RES/ncu.err"
  python3 - "$RES/ncu.csv" <<'EOF' || true
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: sys.exit()
h = rows[0]; ix = {k: h.index(k) for k in ("ID", "Kernel Name", "Metric Name", "Metric Value")}
table = collections.OrderedDict()
for r in rows[1:]:
    key = (r[ix["ID"]], r[ix["Kernel Name"]][:60])
    table.setdefault(key, {})[r[ix["Metric Name"]]] = r[ix["Metric Value"]]
for (i, k), m in table.items():
    print(i, k, " | ".join(f"{n.split('.')[0]}.{n.split('.')[-1]}={v}" for n, v in m.items()))
EOF
fi
exit $rc
