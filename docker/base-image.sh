#!/usr/bin/env bash
# The runtime image's base without a registry: a minimal Debian made with debootstrap and
# loaded with `docker import`, tagged enifab-base:bookworm (the Dockerfile's BASE for machines
# that cannot pull debian:bookworm-slim). It holds what a node needs beside enifab's binaries:
# iproute2 (the lab and the CNI's `ip netns`), iptables (kube-proxy's rules in the nodes).
#
#   bash docker/base-image.sh            # once; a no-op when the image exists
#   bash docker/base-image.sh --rebuild  # make it again
#
# Needs root (debootstrap chroots) and Debian's mirror (DEBIAN_MIRROR to use another).
set -euo pipefail

tag=${ENIFAB_BASE_IMAGE:-enifab-base:bookworm}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${1:-}" != --rebuild ] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base-image: $tag exists"
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "base-image: installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi

root=$(mktemp -d /tmp/enifab-rootfs.XXXXXX)
# debootstrap mounts /proc and /sys inside the tree while it works; unmount before removing,
# or a failed run would take the host's mounts' contents with it.
cleanup() {
  for m in proc sys dev/pts dev; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT

echo "base-image: debootstrap $suite ($mirror)"
debootstrap --variant=minbase --include=iproute2,iptables,ca-certificates \
  "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; rm -f "$root.log"; exit 1; }
rm -f "$root.log"

# What a container never reads: package lists, docs, manuals, locales (about a third of it).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
  "$root"/var/log/*.log "$root"/tmp/*

echo "base-image: importing as $tag"
tar -C "$root" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
docker image ls "$tag"
