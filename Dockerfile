# lsqd in a container (docs/deploy.md). Two stages:
#   build    debian:12 with the toolchain (scripts/install-deps.sh build)
#            builds lsq and lsqd, strips them, and lists the Debian packages
#            of the shared libraries they load (scripts/runtime-packages.sh)
#   runtime  debian:12 with those libraries only (no compiler, no -dev), the
#            Fashion-MNIST package (the default dataset of every job spec),
#            curl for the health check; lsqd as uid 10001, data in a volume
#
#   scripts/docker-base.sh             # debian:12, made locally when missing
#   docker build -t lsqd .
#   docker run -d -p 127.0.0.1:8080:8080 -v lsqd-data:/var/lib/lsqd --name lsqd lsqd
#
# Build arguments: ARCH (x86-64-v3 by default; `--build-arg ARCH=` builds
# for any x86-64), JOBS (make -j, default: every core).
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh build && rm -rf /var/lib/apt/lists/*
# Only what the build reads, so that a change to docs/ or tests/ keeps the
# compiled layer cached.
COPY Makefile ./
COPY engine engine
COPY cli cli
COPY server server
COPY schema schema
COPY scripts scripts
COPY web web
ARG ARCH
ARG JOBS
RUN make -j"${JOBS:-$(nproc)}" build/lsq build/lsqd \
 && strip build/lsq build/lsqd \
 && scripts/runtime-packages.sh build/lsq build/lsqd >build/runtime-packages.txt \
 && cat build/runtime-packages.txt

FROM debian:12
COPY --from=build /src/build/runtime-packages.txt /tmp/runtime-packages.txt
# The libraries lsq and lsqd load, Fashion-MNIST (/usr/share/datasets),
# ca-certificates for https dataset URLs, curl for the HEALTHCHECK.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $(cat /tmp/runtime-packages.txt) dataset-fashion-mnist ca-certificates curl \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/lsqd \
      --shell /usr/sbin/nologin lsqd \
 && install -d -o lsqd -g lsqd -m 0750 /var/lib/lsqd
COPY --from=build /src/build/lsq /src/build/lsqd /usr/local/bin/
COPY --from=build /src/web /usr/local/share/lsqd/web
COPY scripts/docker-entrypoint.sh /usr/local/bin/lsqd-entrypoint
ENV LSQD_LISTEN=0.0.0.0:8080 \
    LSQD_DATA=/var/lib/lsqd \
    LSQD_WEB=/usr/local/share/lsqd/web \
    LSQ_BIN=/usr/local/bin/lsq
USER 10001:10001
WORKDIR /var/lib/lsqd
VOLUME ["/var/lib/lsqd"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
# lsqd exits 0 on SIGTERM after its workers checkpoint; give `docker stop`
# more than --grace (10 s) so a job always checkpoints: docker stop -t 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lsqd-entrypoint"]
