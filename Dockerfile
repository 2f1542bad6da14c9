# enifab's image: the emulator (`enifab serve`), the node shim and the CNI plugin in one Debian
# runtime with iproute2 and iptables. A node container runs `enifab lab agent`; the emulator
# container runs `enifab serve`; see docker-compose.yml.
#
# With a registry (Docker Hub reachable), the default target builds everything:
#   docker build -t enifab:local .
# Without one, make the base with debootstrap and copy binaries built on this machine:
#   bash docker/build-images.sh      # = docker/base-image.sh, cargo build --release, the three
#                                    # binaries linked into target/image/, and
#   docker build --target host --build-arg BASE=enifab-base:bookworm -t enifab:local .
#
# The `host` stage comes before the Rust builder on purpose: Docker's classic builder (no
# BuildKit) builds every stage up to the target, so `--target host` never needs rust:*.

ARG BASE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1-bookworm

# What every variant runs on. debian:bookworm-slim lacks ip and iptables; the debootstrap base
# already has them (no network needed then).
FROM ${BASE} AS runtime-base
RUN if ! command -v ip >/dev/null || ! command -v iptables-restore >/dev/null; then \
      apt-get update && \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 iptables ca-certificates && \
      rm -rf /var/lib/apt/lists/*; \
    fi
# The emulator's state and the lab's state (compose mounts volumes here).
RUN mkdir -p /var/lib/enifab /run/enifab
ENV ENIFAB_DATA_DIR=/var/lib/enifab/emulator ENIFAB_LAB_DIR=/var/lib/enifab/lab
WORKDIR /enifab
COPY examples /enifab/examples
ENTRYPOINT ["enifab"]
CMD ["--help"]

# Binaries built on this machine, put in target/image/ by docker/build-images.sh (only that
# directory of target/ is in the build context: see .dockerignore).
FROM runtime-base AS host
COPY target/image/enifab target/image/enifab-shim target/image/enifab-cni /usr/local/bin/

# Binaries built from source in a Rust image (needs a registry).
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins -p enifab -p enifab-shim && \
    cp target/release/enifab target/release/enifab-shim target/release/enifab-cni /usr/local/bin/

FROM runtime-base AS runtime
COPY --from=builder /usr/local/bin/enifab /usr/local/bin/enifab-shim /usr/local/bin/enifab-cni /usr/local/bin/
