# syntax=docker/dockerfile:1
# x-usage-exporter image: the wheel alone on python:3.11-slim, running as uid/gid 65532 with
# nothing written at runtime, so it runs under a read-only root filesystem.
#   docker build -t x-usage-exporter .
#   docker run --rm --read-only -p 9879:9879 x-usage-exporter --demo

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# The build backend is installed pinned and used without build isolation, so the build does not
# pick whatever hatchling release is newest that day.
RUN pip install --no-cache-dir hatchling==1.32.4
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

FROM python:3.11-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="x-usage-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the X API's pay-per-use usage and spend" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/x-usage-exporter/x-usage-exporter" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
# /var/lib/x-usage-exporter: where --history.file goes; a volume mounted there starts owned by
# the exporter's user (docs/deploy.md).
RUN groupadd --system --gid 65532 exporter \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/x-usage-exporter
# pip compiles the bytecode at install time; at runtime Python then only reads it. The auth
# extra (bcrypt) makes basic_auth_users in --web.config.file work out of the box.
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    pip install --no-cache-dir "/dist/x_usage_exporter-${VERSION}-py3-none-any.whl[auth]"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /
EXPOSE 9879
ENTRYPOINT ["x-usage-exporter"]
CMD ["--config.file=/etc/x-usage-exporter/config.yml"]
