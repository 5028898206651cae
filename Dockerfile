# Container image of the one `ewpm` binary (every `ewpm serve <service>`, `ewpm migrate`).
# Build: docker build -t ghcr.io/ewpm/ewpm:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ewpm

# distroless "nonroot" runs as uid/gid 65532, as the k8s manifests expect.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/ewpm /usr/local/bin/ewpm
ENV EWPM_LOG__FORMAT=json
ENTRYPOINT ["/usr/local/bin/ewpm"]
CMD ["serve", "gateway"]
