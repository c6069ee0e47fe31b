# nats-chat: one image with the three executables (gateway, chat-service, broadcaster).
#
#   docker build -t nats-chat .
#   docker run --rm nats-chat gateway          # or chat-service, broadcaster (the default is gateway)
#
# Stage 1 builds release binaries with the Swift 6 toolchain and Debian's libnats-dev; the Swift runtime
# is linked statically, so stage 2 is a slim Debian with only libnats (+ its libssl/libprotobuf-c), libcurl
# (Foundation's URLSession, which fetches AUTH_JWKS_URL), CA certificates and curl (for health checks).

ARG SWIFT_IMAGE=swift:6.2-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- build ----------------------------------------------------------------------------------------------
FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libnats-dev libcurl4-openssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source changes do not re-fetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Tests ./Tests
RUN for product in chat-service broadcaster gateway; do \
        swift build -c release --static-swift-stdlib --product "$product" || exit 1; \
    done \
    && mkdir -p /out \
    && cp "$(swift build -c release --show-bin-path)"/chat-service \
          "$(swift build -c release --show-bin-path)"/broadcaster \
          "$(swift build -c release --show-bin-path)"/gateway /out/

# --- runtime ----------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libnats3.4 libssl3 libcurl4 ca-certificates curl tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin chat
COPY --from=build /out/ /usr/local/bin/
# The browser UI, served by the gateway at /.
COPY web/ /srv/web/
USER chat
ENV NATS_URL=nats://nats:4222 \
    LOG_LEVEL=info \
    HOST=0.0.0.0 \
    PORT=3000 \
    HTTP_HOST=0.0.0.0 \
    WEB_ROOT=/srv/web
# gateway 3000, chat-service 3001, broadcaster 3002 (/health, /metrics)
EXPOSE 3000 3001 3002
CMD ["gateway"]
