# syntax=docker/dockerfile:1
# The one image of every meter service (see docker-compose.yml): the `meter`
# binary, its configuration in /etc/meter, run as an unprivileged user.
#
#   docker build -t meter:local .
#   docker run --rm meter:local config check

# ---- build -----------------------------------------------------------------
FROM rust:1-bookworm AS builder

# rdkafka builds its bundled librdkafka from source (configure + make, C/C++),
# linked to the system zlib.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake build-essential pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the target folder between builds;
# the binary is copied out of the (mounted) target folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin meter \
    && cp target/release/meter /usr/local/bin/meter

# ---- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# Unprivileged user. The aggregator's state folder exists in the image, owned
# by that user, so a named volume mounted there starts with that owner.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/meter --shell /usr/sbin/nologin meter \
    && mkdir -p /var/lib/meter/aggregator-state \
    && chown -R meter:meter /var/lib/meter \
    && ln -s /etc/meter /var/lib/meter/config

COPY --from=builder /usr/local/bin/meter /usr/local/bin/meter
COPY config/ /etc/meter/

# Every service reads /etc/meter/meter.toml; its price_book is relative
# ("config/price-book.toml"), so it is set absolute here. The working folder
# also resolves the relative defaults: /var/lib/meter/config -> /etc/meter.
ENV METER_CONFIG=/etc/meter/meter.toml
ENV METER_PRICE_BOOK=/etc/meter/price-book.toml
ENV METER_AGGREGATOR__STATE_DIR=/var/lib/meter/aggregator-state
WORKDIR /var/lib/meter

USER meter
# The services handle Ctrl-C (SIGINT) to flush and checkpoint before exiting:
# docker-compose.yml sets stop_signal: SIGINT on the long-running ones.
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/meter"]
CMD ["--help"]
