#!/bin/sh
# Runs every libFuzzer target built under BUILD/fuzz/ for SECONDS each on its
# seed corpus (fuzz/corpus/<target>/; new inputs go to BUILD/corpus/<target>/,
# not committed) and prints, per target, the execs/s and total execs.
# --replay first runs each target once on every input of
# fuzz/regressions/<target>/ (inputs that once crashed it). Exits non-zero
# on any crash, leak, sanitizer report or timeout; the input that did it is
# saved as BUILD/artifacts/<target>-crash-<sha1> (docs/reliability.md).
# --parallel runs every target at once under `nice -n 19` (long runs on a
# machine that has other work: the targets take the idle cycles) and prints
# the same table when all have ended.
# Usage: scripts/fuzz.sh BUILD SECONDS [--replay] [--parallel]
set -u
build=$1
secs=$2
replay=
parallel=
for a in "${3:-}" "${4:-}"; do
  case "$a" in
  --replay) replay=--replay ;;
  --parallel) parallel=1 ;;
  "") ;;
  *) echo "scripts/fuzz.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
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
# one_target BIN: runs it, writes its table row to BUILD/logs/<target>.row
one_target() {
  bin=$1
  t=$(basename "$bin")
  log="$build/logs/$t.log"
  row="$build/logs/$t.row"
  : > "$log"
  if [ "$replay" = --replay ] && [ -d "$root/fuzz/regressions/$t" ] &&
     [ -n "$(ls -A "$root/fuzz/regressions/$t")" ]; then
    if ! "$bin" -rss_limit_mb=2048 -timeout=10 "$root/fuzz/regressions/$t"/* >> "$log" 2>&1; then
      printf '%-10s regression input fails again: see %s\n' "$t" "$log" > "$row"
      return
    fi
  fi
  mkdir -p "$build/corpus/$t"
  $nice "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -timeout="$timeout" -print_final_stats=1 \
      -artifact_prefix="$build/artifacts/$t-" "$build/corpus/$t" "$root/fuzz/corpus/$t" \
      >> "$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(ls "$build/corpus/$t" | wc -l)
  if [ "$rc" = 0 ]; then res=ok; else res="FAILED (exit $rc): see $log"; fi
  printf '%-10s %10s %12s %8s  %s\n' "$t" "${rate:-?}" "${execs:-?}" "$units" "$res" > "$row"
}
nice=
# libFuzzer's -timeout is wall-clock time: a target starved of the CPU under
# nice 19 on a busy machine reports a "timeout" on an input that takes
# milliseconds. --parallel runs allow FUZZ_TIMEOUT seconds (default 300) per
# input for that reason; other runs 10 s.
timeout=10
if [ -n "$parallel" ]; then nice="nice -n 19"; timeout=${FUZZ_TIMEOUT:-300}; fi
for bin in "$build"/fuzz/*; do
  [ -x "$bin" ] || continue
  rm -f "$build/logs/$(basename "$bin").row"
  if [ -n "$parallel" ]; then one_target "$bin" & else one_target "$bin"; cat "$build/logs/$(basename "$bin").row"; fi
done
wait
for bin in "$build"/fuzz/*; do
  [ -x "$bin" ] || continue
  row="$build/logs/$(basename "$bin").row"
  if [ -n "$parallel" ]; then cat "$row"; fi
  case "$(cat "$row")" in *" ok") ;; *) fail=1 ;; esac
  n=$(awk '{print $3}' "$row")
  case "$n" in ''|*[!0-9]*) n=0 ;; esac
  total=$((total + n))
done
echo "fuzz: $total execs in $(($(date +%s) - start)) s"
if [ "$fail" != 0 ]; then echo "fuzz: FAILED" >&2; fi
exit "$fail"
