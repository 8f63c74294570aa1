#!/bin/sh
# Prints, one a line, the Debian packages that hold the shared libraries the
# given executables load (ldd, symlinks resolved, looked up with dpkg -S).
# The container's build stage writes this list so that its runtime stage
# installs exactly the libraries lsq and lsqd link, and no -dev package.
# Usage: scripts/runtime-packages.sh EXECUTABLE...
set -eu
[ $# -gt 0 ] || { echo "usage: scripts/runtime-packages.sh EXECUTABLE..." >&2; exit 2; }
libs=$(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u)
for lib in $libs; do
  real=$(readlink -f "$lib")
  # dpkg recorded /lib/... or /usr/lib/... (merged /usr): glob past the
  # /usr, keep the multiarch folder so that lib32 copies never match
  pkg=$(dpkg -S "*${real#/usr}" 2>/dev/null | sed 's/:.*//; s/, /\n/g' | grep -v -- '-dev$' | head -n 1) || true
  if [ -z "$pkg" ]; then
    echo "runtime-packages.sh: no package holds $lib ($real)" >&2
    exit 1
  fi
  echo "${pkg%%:*}"
done | sort -u
