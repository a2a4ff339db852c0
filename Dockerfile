# syntax=docker/dockerfile:1
# frame-buffer container image: a build stage with the -dev packages and a
# slim runtime stage with only the shared libraries, running as a non-root
# user. Both package lists live in tools/ci/ (packages.txt for the build,
# runtime-packages.txt for the runtime) and are installed by the same script
# CI uses, so the image and CI cannot drift apart.
#
#   docker build -t frame-buffer:2.0.0 .
#   docker run --rm -p 8002:8002 -e REDIS_URL=redis://host:6379/0 frame-buffer:2.0.0
#
# The image also holds fb-processor and fb-inject for in-cluster testing:
#   kubectl run fb-inject --rm -it --restart=Never --image=frame-buffer:2.0.0 \
#     --command -- fb-inject --help

ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build
FROM ${DEBIAN_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY tools/ci/install-packages.sh tools/ci/packages.txt /tmp/ci/
RUN bash /tmp/ci/install-packages.sh --list /tmp/ci/packages.txt \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
# Only the three programs the image ships (tools/ci/build-matrix.sh builds
# every target in every build type).
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DFB_WERROR=ON -DBUILD_TESTING=OFF \
    && cmake --build /build -j"$(nproc)" --target frame-buffer fb-processor fb-inject \
    && install -D -m 0755 -t /out/usr/local/bin \
        /build/bin/frame-buffer /build/bin/fb-processor /build/bin/fb-inject \
    && /out/usr/local/bin/frame-buffer --version

# -------------------------------------------------------------- runtime
FROM ${DEBIAN_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY tools/ci/install-packages.sh tools/ci/runtime-packages.txt /tmp/ci/
# apt-get clean: no downloaded .deb stays in the layer, whatever the base's
# apt settings (Debian's slim images drop them, a plain minbase does not).
RUN bash /tmp/ci/install-packages.sh --list /tmp/ci/runtime-packages.txt \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /tmp/ci \
    && groupadd --system --gid 10001 framebuffer \
    && useradd --system --uid 10001 --gid framebuffer --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin framebuffer

COPY --from=build /out/ /
# Fails the build if a runtime library is missing from runtime-packages.txt.
RUN frame-buffer --version

LABEL org.opencontainers.image.title="frame-buffer" \
      org.opencontainers.image.description="Frame Buffer v2: routes video frames from Redis to processors over Redis and NATS"

# Numeric so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
EXPOSE 8002
# The gateway finishes in-flight hand-offs and exits on SIGTERM.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/frame-buffer"]
