#!/usr/bin/env bash
# GPU verification in one go (under 8 minutes on one GPU): the CUDA tests, a bf16 and an fp16 run,
# a compiled run with the teachers taking turns on the GPU, a 1-GPU DistributedDataParallel run through
# torchrun with NCCL, and `mtkd bench --device cuda` (with the `turns` mode);
# prints one table (check | device | result | seconds) and exits 1 if any check failed.
#
#   scripts/gpu_check.sh          # on a machine with a CUDA GPU
#   scripts/gpu_check.sh --cpu    # the same checks on the CPU (bf16, gloo): what CI runs
#
# Run from the repository root with mtkd importable (installed, or PYTHONPATH=src).
set -uo pipefail

DEVICE=cuda
if [[ "${1:-}" == "--cpu" ]]; then DEVICE=cpu; fi
PY=${PYTHON:-python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mtkd-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROWS=()
FAILED=0

if [[ "$DEVICE" == cuda ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device visible to torch; run with --cpu for the CPU checks" >&2
  exit 2
fi

# check NAME COMMAND...: run it, log its output to $WORK/NAME.log, add a row
check() {
  local name=$1; shift
  local start end status
  start=$(date +%s.%N)
  if "$@" >"$WORK/$name.log" 2>&1; then status=ok; else status="FAILED (see below)"; FAILED=1; fi
  end=$(date +%s.%N)
  ROWS+=("| $name | $DEVICE | $status | $(printf '%.1f' "$(echo "$end - $start" | bc)") |")
  if [[ "$status" != ok ]]; then echo "== $name failed; last lines:" >&2; tail -n 30 "$WORK/$name.log" >&2; fi
}

# a small config: two cnn1d teachers, an MLP student, a few hundred steps (a few dozen on the CPU)
if [[ "$DEVICE" == cuda ]]; then N=1000; T=150; S=200; else N=300; T=20; S=30; fi
cat >"$WORK/check.yaml" <<EOF
seed: 0
data: {name: mnist1d, num_samples: $N, unlabeled: $N}
teachers:
  - {name: cnn_a, arch: cnn1d, train: {steps: $T, eval_every: $T}}
  - {name: cnn_b, arch: cnn1d, train: {steps: $T, eval_every: $T}}
student: {arch: mlp, hidden: [100, 100]}
distill: {steps: $S, batch_size: 100, eval_every: $S, log_every: 10, checkpoint_every: $S, device: $DEVICE}
output: {plots: false}
EOF

if [[ "$DEVICE" == cuda ]]; then
  # every test that needs CUDA (they skip themselves on a CPU-only machine)
  check cuda-tests "$PY" -m pytest tests/test_precision.py tests/test_trainer.py tests/test_placement.py -q -x -p no:cacheprovider
  check fp16-run "$PY" -m mtkd run "$WORK/check.yaml" --out "$WORK/fp16" --no-progress --set distill.amp=fp16
  # torch.compile of the student, and the teachers taking turns on the GPU (one at a time)
  check compile-turns-run "$PY" -m mtkd run "$WORK/check.yaml" --out "$WORK/compiled" --no-progress \
    --set distill.compile=true --set distill.teachers_on_device=1
fi
check bf16-run "$PY" -m mtkd run "$WORK/check.yaml" --out "$WORK/bf16" --no-progress --set distill.amp=bf16
if [[ "$DEVICE" == cuda ]]; then  # one process, NCCL: DistributedDataParallel's CUDA path
  check ddp-torchrun "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m mtkd run "$WORK/check.yaml" \
    --out "$WORK/ddp" --no-progress
else  # two processes, gloo
  check ddp-torchrun env OMP_NUM_THREADS=1 "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 \
    -m mtkd run "$WORK/check.yaml" --out "$WORK/ddp" --no-progress
fi
if [[ "$DEVICE" == cuda ]]; then
  check bench "$PY" -m mtkd bench --device cuda --teachers 1,8 --steps 20 --repeats 5 \
    --modes student_only,hand_loop,live,turns,cached --json "$WORK/bench.json"
else
  check bench "$PY" -m mtkd bench --device cpu --teachers 1 --steps 2 --repeats 1 --warmup 0 --samples 200 \
    --unlabeled 200 --json "$WORK/bench.json"
fi

echo
echo "| check | device | result | seconds |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
for run in fp16 bf16 ddp; do  # the student's test accuracy of each run that finished
  if [[ -f "$WORK/$run/summary.json" ]]; then
    "$PY" -c "import json,sys; s=json.load(open(sys.argv[1])); print(f'{sys.argv[2]}: student accuracy {s[\"student\"][\"accuracy\"]:.3f}, {s[\"timing\"][\"examples_per_second\"]:.0f} examples/s')" \
      "$WORK/$run/summary.json" "$run"
  fi
done
if [[ -f "$WORK/bench.json" ]]; then "$PY" -c "import json,sys; [print(r) for r in json.load(open(sys.argv[1]))]" "$WORK/bench.json" | head -n 12; fi
exit $FAILED
