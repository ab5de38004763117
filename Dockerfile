# syntax=docker/dockerfile:1
# The ama-migrator image: the operator binary only, on distroless/cc (glibc, libgcc, CA
# certificates; no shell, no package manager), running as the distroless `nonroot` user 65532,
# which the Helm chart's podSecurityContext expects.
#
# Not built in CI: the CI machine has no Docker daemon. Build it with
#   docker build -t ama-migrator:$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2) .
# The binary links only glibc, libm and libgcc_s (TLS is rustls/aws-lc, SQLite is bundled).

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Cargo.toml names the benches, so they must be present for the manifest to load.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ama-migrator \
    && install -D -m 0755 target/release/ama-migrator /out/ama-migrator

# bookworm builder ↔ debian12 runtime: the same glibc.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ama-migrator /usr/local/bin/ama-migrator
# glibc gives each thread that contends for the allocator an arena of its own (up to 8 per core)
# and returns little of it: with 10,000 machines the operator's RSS was 1.6x its live heap. Two
# arenas keep it near the heap (`cargo bench --bench operator_rss` runs its child with this
# file's ENV lines and prints the figure).
ENV MALLOC_ARENA_MAX=2
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ama-migrator"]
CMD ["run"]
