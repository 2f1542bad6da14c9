#!/usr/bin/env bash
# Compose v2 (`docker compose`) where the engine has only the old Python docker-compose, as on
# Debian bookworm: take the plugin from Debian's own docker-compose package of the next release
# (a static Go binary needing only libc), checked against the SHA256 of Debian's package index,
# and put it where the docker CLI looks for plugins. No-op when `docker compose` works.
set -euo pipefail

if docker compose version >/dev/null 2>&1; then
  exit 0
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${COMPOSE_SUITE:-trixie}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "install-compose: docker-compose v2 from Debian $suite"
curl -fsS --retry 3 -o "$work/Packages.xz" "$mirror/dists/$suite/main/binary-amd64/Packages.xz"
xz -d "$work/Packages.xz"
entry=$(awk '/^Package: docker-compose$/{p=1} p&&/^$/{exit} p' "$work/Packages")
file=$(awk '/^Filename:/{print $2}' <<<"$entry")
sum=$(awk '/^SHA256:/{print $2}' <<<"$entry")
[ -n "$file" ] && [ -n "$sum" ] || { echo "install-compose: no docker-compose in $suite" >&2; exit 1; }
curl -fsS --retry 3 -o "$work/dc.deb" "$mirror/$file"
echo "$sum  $work/dc.deb" | sha256sum -c --quiet
dpkg-deb -x "$work/dc.deb" "$work/x"
install -D -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" /usr/libexec/docker/cli-plugins/docker-compose
docker compose version
