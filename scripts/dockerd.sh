#!/bin/sh
# Starts Debian's dockerd (package docker.io) in the background when no daemon
# answers, and waits until its socket does. For machines without systemd (CI,
# containers, VMs started bare); where systemd runs docker.service this is a
# no-op. Log: /var/log/dockerd.log. Usage: scripts/dockerd.sh
set -eu
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null 2>&1 || {
  echo "dockerd.sh: dockerd missing (scripts/install-deps.sh container)" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  echo "dockerd.sh: no daemon answers and starting one needs root" >&2; exit 1
fi
# containerd, iptables and friends live in /usr/sbin.
PATH=/usr/sbin:/sbin:$PATH
export PATH
if ! pgrep -x dockerd >/dev/null 2>&1; then
  nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
fi
i=0
while ! docker info >/dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -gt 60 ]; then
    echo "dockerd.sh: no answer after 60 s; last lines of /var/log/dockerd.log:" >&2
    tail -n 20 /var/log/dockerd.log >&2
    exit 1
  fi
  sleep 1
done
