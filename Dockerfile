# The Isthmus image: `docker build -t REGISTRY/isthmus:TAG .` at the repository root.
# Build stage: the release binary (rust-version in Cargo.toml is the minimum).
FROM rust:1.95-bookworm AS build
# aws-lc-sys (rustls' crypto) builds its C code with cc; CMake is its fallback on some targets.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p isthmus \
    && install -m 0755 target/release/isthmus /isthmus

# Runtime stage: Debian slim with the CA roots (TLS origination to external services verifies
# against the operating system's roots), running as a numeric non-root user so that the
# pod's runAsNonRoot can be checked by the kubelet. The manifests' preStop hook runs `sleep`
# from it (a distroless base would need another pause).
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 65532 isthmus \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin isthmus
COPY --from=build /isthmus /usr/local/bin/isthmus
USER 65532:65532
# Gateway ports as the manifests under deploy/kubernetes bind them, and the admin server.
EXPOSE 8080 8443 15000
ENTRYPOINT ["/usr/local/bin/isthmus"]
CMD ["run", "--kubernetes", "--admin", "0.0.0.0:15000", "--bind", "80=0.0.0.0:8080", "--bind", "443=0.0.0.0:8443"]
