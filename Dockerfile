# syntax=docker/dockerfile:1
#
# One image for the Mimeo operator and its worker Jobs: /usr/local/bin/mimeo.
#   docker build -t mimeo:dev .
#   docker run --rm mimeo:dev --help
# Needs BuildKit (the default builder of Docker 23+ and of `docker buildx`): the cargo registry
# and the target directory live in cache mounts, so a rebuild after a source change recompiles
# only the mimeo crate.

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS builder
# The release profile keeps line tables (about 150 MB of the binary); the image drops them and
# keeps symbol names, so panics still name functions (about 27 MB). --build-arg KEEP_DEBUG=1
# keeps everything.
ARG KEEP_DEBUG=0
# Cargo features, e.g. `--build-arg CARGO_FEATURES=chaos` for the e2e api_faults scenario.
ARG CARGO_FEATURES=""
WORKDIR /src
# The whole crate (filtered by .dockerignore): src/ embeds files from examples/ (the demo), and
# Cargo.toml may name benches, tests or examples that must exist for the manifest to load.
COPY . .
RUN --mount=type=cache,id=mimeo-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=mimeo-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=mimeo-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin mimeo ${CARGO_FEATURES:+--features "$CARGO_FEATURES"} \
 && install -D -m 0755 target/release/mimeo /out/usr/local/bin/mimeo \
 && if [ "$KEEP_DEBUG" != 1 ]; then strip --strip-debug /out/usr/local/bin/mimeo; fi \
 && /out/usr/local/bin/mimeo --version

# distroless/cc: glibc, libgcc_s and the CA certificates (/etc/ssl/certs, read by rustls for
# HTTPS to S3 and the API server), no shell, no package manager; its Debian 12 glibc matches the
# builder's. TLS is rustls, so no OpenSSL. (Static musl on scratch would need certificates copied
# in and musl's slower allocator on the data path, for a few MB saved.)
FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mimeo" \
      org.opencontainers.image.description="Kubernetes operator for logical duplication of backup data (operator and worker)" \
      org.opencontainers.image.licenses="Apache-2.0"
# 65532 is `nonroot` in distroless; numeric so that runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["/usr/local/bin/mimeo"]
CMD ["operator"]

# `--target prebuilt`: the same image around dist/mimeo from the build context, a binary built
# on a host with the runtime image's glibc (e2e/image.sh, for test runs that cannot afford a
# second release build; docs/image.md). The builder stage is not built then.
FROM runtime AS prebuilt
COPY dist/mimeo /usr/local/bin/mimeo

# The default: the binary built above.
FROM runtime
COPY --from=builder /out/usr/local/bin/mimeo /usr/local/bin/mimeo
