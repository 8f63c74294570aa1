# lsqd in a container: build stage with the full toolchain, run stage with
# the runtime libraries only. Data (SQLite + job folders) lives in /var/lib/lsqd.
#   docker build -t lsqd .
#   docker run -p 8080:8080 -v lsqd-data:/var/lib/lsqd lsqd
FROM debian:12 AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN make -j"$(nproc)" build/lsq build/lsqd && mkdir -p web

FROM debian:12
# Runtime libraries of lsq and lsqd (libarchive, libpng and libjpeg read the
# datasets that `lsq dataset import` decodes), and the Fashion-MNIST package.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libmicrohttpd12 libjansson4 libsqlite3-0 libcurl4 libopenblas0-pthread zlib1g \
      libprotobuf-c1 libarchive13 libpng16-16 libjpeg62-turbo \
      libgomp1 dataset-fashion-mnist curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/lsqd --create-home --shell /usr/sbin/nologin lsqd
COPY --from=build /src/build/lsq /src/build/lsqd /usr/local/bin/
COPY --from=build /src/web /usr/local/share/lsqd/web
ENV LSQD_LISTEN=0.0.0.0:8080 \
    LSQD_DATA=/var/lib/lsqd \
    LSQD_WEB=/usr/local/share/lsqd/web \
    LSQ_BIN=/usr/local/bin/lsq
USER lsqd
VOLUME ["/var/lib/lsqd"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# lsqd exits 0 on SIGTERM after its workers checkpoint (docker stop: raise -t
# above --grace, 10 s by default, if jobs must always checkpoint).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/lsqd"]
