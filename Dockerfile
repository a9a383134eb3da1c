# zexec in a container: broker, worker and the zexec command in one image.
#
#   docker build -t zexec .                      # Debian 12 from Docker Hub
#   podman build --build-arg BASE=localhost/debian:bookworm -t zexec .
#
# The build stage runs the project's own scripts/bootstrap (Debian packages)
# and a Release build without tests; the runtime stage has only the runtime
# libraries, the three programs, the example programs and plugins.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY scripts/bootstrap scripts/bootstrap
RUN ./scripts/bootstrap && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DZEXEC_TESTS=OFF -DZEXEC_BENCH=OFF \
        -DZEXEC_WERROR=OFF -DCMAKE_INSTALL_PREFIX=/usr/local \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/stage cmake --install /build \
 && mkdir -p /stage/usr/local/lib/zexec/plugins /stage/usr/local/lib/zexec/examples \
 && cp /build/examples/*.so /stage/usr/local/lib/zexec/plugins/ \
 && find /build/examples -maxdepth 1 -type f -executable ! -name '*.so' \
        -exec cp {} /stage/usr/local/lib/zexec/examples/ \; \
 && rm -f /stage/usr/local/lib/*.a

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
        libzmq5 libczmq4 libmsgpackc2 libssl3 libjansson4 libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /home/zexec zexec
COPY --from=build /stage/ /
RUN ldconfig
# the examples (seed_square, ...) on PATH; ZEXEC_PLUGIN_DIR is where they and
# the compose file find the demo plugin
ENV PATH=/usr/local/lib/zexec/examples:$PATH \
    ZEXEC_PLUGIN_DIR=/usr/local/lib/zexec/plugins
USER zexec
WORKDIR /home/zexec
EXPOSE 5570 5571
CMD ["zexec", "--help"]
