#!/bin/sh
# Stops the one-node Slurm cluster of scripts/slurm-up.sh: slurmd, slurmctld
# and its munged, by their pid files. Idempotent. Keeps the state folder
# (its key and configuration) unless --purge is given.
# Usage: scripts/slurm-down.sh [--purge] [STATE_DIR]
set -eu
purge=0
if [ "${1:-}" = "--purge" ]; then purge=1; shift; fi
dir=${1:-${LSQ_SLURM_DIR:-/tmp/lsqd-slurm}}

stop() { # pid file
  [ -f "$1" ] || return 0
  pid=$(cat "$1" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
stop "$dir/slurmd.pid"
stop "$dir/slurmctld.pid"
stop "$dir/munge/munged.pid"
if [ "$purge" = 1 ]; then rm -rf "$dir"; fi
exit 0
