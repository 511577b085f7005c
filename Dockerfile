# The wsproxy image: the static binary from `make build-static` and nothing else.
# There is no build stage (no base image has to be pulled): run `make image`,
# which builds bin/proxy-linux-amd64 first.
FROM scratch

# `make image` passes the version from git describe (what `proxy --version`
# prints) and the commit.
ARG VERSION=dev
ARG REVISION=unknown
ARG LICENSES=Apache-2.0
LABEL org.opencontainers.image.title="wsproxy" \
      org.opencontainers.image.description="Group-based WebSocket forwarder: every message reaches every other member of its group" \
      org.opencontainers.image.source="https://github.com/wsproxy/wsproxy" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

COPY bin/proxy-linux-amd64 /proxy

# Numeric, so no /etc/passwd is needed; 65532 is the usual "nonroot".
USER 65532:65532
EXPOSE 8080

# The binary checks itself: there is no shell or curl in the image.
# It requests http://127.0.0.1:8080/healthz; set PROXY_HEALTHCHECK_URL if
# PROXY_ADDR moves the port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/proxy", "healthcheck"]

# SIGTERM drains for --shutdown-timeout, closes clients with 1001 and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/proxy"]
