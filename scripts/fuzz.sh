#!/bin/sh
# Runs every libFuzzer target built under BUILD/fuzz/ for SECONDS each on its
# seed corpus (fuzz/corpus/<target>/; new inputs go to BUILD/corpus/<target>/,
# not committed) and prints, per target, the execs/s and total execs.
# --replay first runs each target once on every input of
# fuzz/regressions/<target>/ (inputs that once crashed it). Exits non-zero
# on any crash, leak, sanitizer report or timeout; the input that did it is
# saved as BUILD/artifacts/<target>-crash-<sha1> (docs/reliability.md).
# Usage: scripts/fuzz.sh BUILD SECONDS [--replay]
set -u
build=$1
secs=$2
replay=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/artifacts" "$build/logs"
fail=0
total=0
start=$(date +%s)
# ASan's leak check at exit covers every input; UBSan stops at its first report.
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export OMP_NUM_THREADS=1
printf '%-10s %10s %12s %8s  %s\n' target execs/s execs corpus result
for bin in "$build"/fuzz/*; do
  t=$(basename "$bin")
  [ -x "$bin" ] || continue
  log="$build/logs/$t.log"
  : > "$log"
  if [ "$replay" = --replay ] && [ -d "$root/fuzz/regressions/$t" ] &&
     [ -n "$(ls -A "$root/fuzz/regressions/$t")" ]; then
    if ! "$bin" -rss_limit_mb=2048 -timeout=10 "$root/fuzz/regressions/$t"/* >> "$log" 2>&1; then
      printf '%-10s regression input fails again: see %s\n' "$t" "$log"
      fail=1
      continue
    fi
  fi
  mkdir -p "$build/corpus/$t"
  "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$build/artifacts/$t-" "$build/corpus/$t" "$root/fuzz/corpus/$t" \
      >> "$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(ls "$build/corpus/$t" | wc -l)
  if [ "$rc" = 0 ]; then res=ok; else res="FAILED (exit $rc): see $log"; fail=1; fi
  printf '%-10s %10s %12s %8s  %s\n' "$t" "${rate:-?}" "${execs:-?}" "$units" "$res"
  total=$((total + ${execs:-0}))
done
echo "fuzz: $total execs in $(($(date +%s) - start)) s"
if [ "$fail" != 0 ]; then echo "fuzz: FAILED" >&2; fi
exit "$fail"
