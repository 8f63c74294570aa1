#!/bin/sh
# Makes the local base image debian:12 when docker has none: debootstrap
# --variant=minbase of bookworm from the Debian mirror apt already uses, then
# `docker import`, slimmed as Debian's -slim images are (no docs, manual
# pages or translations). No registry is asked. A no-op when the image exists.
# Usage: scripts/docker-base.sh [IMAGE]   (IMAGE defaults to debian:12)
# DEBIAN_MIRROR overrides the mirror (default: the first http(s) URI of apt's
# sources for the suite bookworm, else http://deb.debian.org/debian).
set -eu
image=${1:-debian:12}
if docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
command -v debootstrap >/dev/null 2>&1 || {
  echo "docker-base.sh: debootstrap missing (scripts/install-deps.sh container)" >&2; exit 1; }

if [ -z "${DEBIAN_MIRROR:-}" ]; then
  # deb822 (URIs: ...) or one-line (deb URI bookworm main) sources.
  DEBIAN_MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
                      /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ { u = $2 } /^Suites:/ && / bookworm( |$)/ && u { print u; exit }
         /^deb / && $3 == "bookworm" { print $2; exit }')
  : "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"
fi

root=$(mktemp -d /var/tmp/lsqd-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "docker-base.sh: debootstrap bookworm from $DEBIAN_MIRROR" >&2
debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 || {
  tail -n 20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# The same sources inside the image as on the host: bookworm, its updates and
# security suites, so that `apt-get install` in a Dockerfile gets fixed
# packages. The security mirror is derived from the main one.
sec=$(echo "$DEBIAN_MIRROR" | sed 's#/debian/*$#/debian-security#')
cat >"$root/etc/apt/sources.list" <<SRC
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $sec bookworm-security main
SRC
# Slim, as Debian's official -slim images are: no documentation, manual
# pages or translations, now or from packages installed later (dpkg
# path-exclude; copyright files stay), no recommends, no apt lists.
cat >"$root/etc/dpkg/dpkg.cfg.d/90lsqd-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/groff/* \
       "$root"/usr/share/lintian/*
find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
       "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/*
printf 'APT::Install-Recommends "false";\n' >"$root/etc/apt/apt.conf.d/90lsqd-norecommends"
tar -C "$root" --numeric-owner -c . |
  docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
echo "docker-base.sh: $image imported" >&2
