#!/usr/bin/env bash
# Build enifab:local without a registry: the Debian base from debootstrap (docker/base-image.sh),
# enifab's binaries with this machine's cargo, then the Dockerfile's `host` target. What
# docker-compose.yml runs; CI calls it too.
#
#   bash docker/build-images.sh                  # release binaries
#   PROFILE=debug bash docker/build-images.sh    # reuse a debug build (CI: already built)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PROFILE:-release}
image=${ENIFAB_IMAGE:-enifab:local}
base=${ENIFAB_BASE_IMAGE:-enifab-base:bookworm}

bash docker/base-image.sh
if [ "$profile" = release ]; then
  cargo build --release --locked --bins -p enifab -p enifab-shim
else
  cargo build --locked --bins -p enifab -p enifab-shim
fi
echo "build-images: $image (binaries from target/$profile, base $base)"
# Only target/image/ is in the build context: hard links, so nothing is copied twice.
mkdir -p target/image
for b in enifab enifab-shim enifab-cni; do
  ln -f "target/$profile/$b" "target/image/$b" 2>/dev/null || cp -f "target/$profile/$b" "target/image/$b"
done
# The classic builder prints a deprecation notice for BuildKit; it is harmless here.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! docker build --quiet --target host --build-arg "BASE=$base" -t "$image" . >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
docker image inspect "$image" >/dev/null
docker image ls "$image"
