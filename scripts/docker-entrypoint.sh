#!/bin/sh
# Entry point of the lsqd image (Dockerfile). lsqd runs as PID 1 (exec), so
# `docker stop` reaches it directly: it checkpoints its workers and exits 0.
#   (no arguments), or flags only     lsqd [FLAGS]: the daemon, configured by
#                                     the LSQD_* variables of the image
#   an lsqd command (token ...)       lsqd COMMAND ...: e.g. an operator's
#                                     `token create` on the data volume
#   lsq ARGS / lsqd ARGS              that program
#   anything else                     run as given (sh, ls, ...)
set -eu
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  exec /usr/local/bin/lsqd "$@"
fi
case "$1" in
  lsqd|lsq) prog=$1; shift; exec "/usr/local/bin/$prog" "$@" ;;
  token|tokens) exec /usr/local/bin/lsqd "$@" ;;
esac
exec "$@"
