# syntax=docker/dockerfile:1
#
# agora: build with `docker build -t agora .` (BuildKit, the default builder since Docker 23),
# run with `docker run -p 8080:8080 -v agora-data:/data agora`. In full:
#
#   docker build -t agora .
#   docker run --rm -v agora-data:/data agora seed --markets 1000   # optional demo data
#   docker run --rm -i -v agora-data:/data agora users create --username admin --role admin   # password on stdin
#   docker run -d --name agora -p 8080:8080 -v agora-data:/data agora
#   curl http://127.0.0.1:8080/healthz
#   docker stop agora   # SIGTERM: graceful shutdown
#
# The image runs as the unprivileged user `agora` (uid 10001) with its data in the volume
# `/data` (a bind-mounted host directory must be writable by uid 10001); settings are
# `-e AGORA_...` variables or flags after the image name.

############################ build ############################
FROM rust:1-bookworm AS build
WORKDIR /src

# Sources only: no target/, no local database, no npm cache in the build context's copy. The
# search embedder's token table (data/embedder) is compiled into the binary.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY data/embedder data/embedder
COPY tests tests
COPY benches benches

# The cargo registry, git checkouts and target/ are BuildKit cache mounts: they survive between
# builds on the same builder, so a source change recompiles agora, not its dependencies. The
# target/ mount is not part of the image, so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git/db \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/agora /out/agora

############################ runtime ############################
FROM debian:bookworm-slim

# curl for the HEALTHCHECK; ca-certificates for outbound HTTPS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user owning the data directory. The ownership is set before VOLUME, so a
# new named volume starts out owned by agora (a bind-mounted host directory must be writable
# by uid 10001).
RUN groupadd --system --gid 10001 agora \
    && useradd --system --uid 10001 --gid agora --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin agora \
    && mkdir -p /data \
    && chown agora:agora /data

COPY --from=build /out/agora /usr/local/bin/agora

ENV AGORA_DATA_DIR=/data \
    AGORA_BIND=0.0.0.0:8080
VOLUME ["/data"]
WORKDIR /data
USER agora
EXPOSE 8080

# Liveness only (readiness is /readyz). Assumes the default port: change it here too if
# AGORA_BIND is overridden.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

# agora stops gracefully on SIGTERM (docker stop): in-flight requests finish, the WAL is
# checkpointed.
ENTRYPOINT ["agora"]
CMD ["serve"]
