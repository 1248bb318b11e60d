#!/usr/bin/env bash
# A whole GPU session in one device call (the device tool stops a command at 600 s).
# Here:   ../shared/gpu/pack specs bench
# Device: carry [".gpu"], command: bash bench/gpu_session.sh     (from the repository root)
# 1. nvidia-smi;  2. the GPU test suite, .gpu/run-tests (capped; a failure does not stop 3.);
# 3. .gpu/bench/compare.py with the time that is left. Everything lands in $OUT: session.log,
#    the tests' logs, <date>-<gpu>-compare.json/.txt, and compare-logs/ (PyTorch children).
# Knobs (environment): SESSION_S (560), TESTS_S (180, 0 skips the tests), GRACE_S (45),
# COMPARE_ARGS (more compare.py options, e.g. "--batch 1,8,32 --precision f32,tf32,bf16").
set -u
t0=$(date +%s)
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
[ "$(basename "$root")" = .gpu ] && root=$(dirname "$root")  # run as .gpu/bench/gpu_session.sh
cd "$root" || exit 1
SESSION_S=${SESSION_S:-560}
TESTS_S=${TESTS_S:-180}
GRACE_S=${GRACE_S:-45}
OUT=${OUT:-/tmp/unetc-gpu-session}
WORK=/tmp/unetc-compare
mkdir -p "$OUT"
export OUT

session() {
  echo "== $(date -Is) $(uname -n) $(pwd)"
  nvidia-smi || echo "nvidia-smi failed"
  if [ "$TESTS_S" -gt 0 ] && [ -f .gpu/run-tests ]; then
    echo "== GPU tests (.gpu/run-tests, at most ${TESTS_S} s)"
    timeout -k 10 "$TESTS_S" bash .gpu/run-tests
    rc=$?
    [ $rc -eq 124 ] && echo "run-tests: stopped after ${TESTS_S} s"
    echo "run-tests: exit $rc after $(( $(date +%s) - t0 )) s (logs: \$OUT/test-*.log)"
  else
    echo "== GPU tests skipped (TESTS_S=$TESTS_S, .gpu/run-tests $( [ -f .gpu/run-tests ] && echo present || echo missing))"
  fi
  # compare.py may run GRACE_S past its budget before it kills a configuration; 15 s to write.
  budget=$(( SESSION_S - ($(date +%s) - t0) - GRACE_S - 15 ))
  [ $budget -lt 60 ] && budget=60
  compare=.gpu/bench/compare.py
  [ -f "$compare" ] || compare=bench/compare.py
  unetc=.gpu/bin/unetc
  [ -x "$unetc" ] || unetc=target/release/unetc
  echo "== $compare (budget ${budget} s)"
  # shellcheck disable=SC2086  # COMPARE_ARGS is a list of options
  python3 "$compare" --unetc "$unetc" --out-dir "$OUT" --work-dir "$WORK" \
    --budget-s "$budget" --grace-s "$GRACE_S" ${COMPARE_ARGS:-}
  echo "compare.py: exit $? after $(( $(date +%s) - t0 )) s in all"
  [ -d "$WORK/logs" ] && cp -r "$WORK/logs" "$OUT/compare-logs"
}

session 2>&1 | tee "$OUT/session.log"
