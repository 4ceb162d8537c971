# syntax=docker/dockerfile:1
# The Sesame operator image: `docker build -t ghcr.io/sesame-dev/sesame:0.1.0 .`
# (the Helm chart's default image; keep the tag equal to pyproject's version and the chart's appVersion).
#
# Two stages: the first installs the package and its runtime dependencies (`.[operator]`: Kopf,
# the Kubernetes client, prometheus-client, cryptography, PyYAML) into a virtualenv; the second
# copies only that virtualenv onto the same slim base. No compilers, no pip cache, no tests, no
# dev tooling in the final image. Pin the base by digest too (FROM python:…@sha256:…) in your CI.

FROM python:3.12.12-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/sesame
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/sesame/bin/pip install --no-compile '.[operator]' \
 && /opt/sesame/bin/python -m compileall -q /opt/sesame/lib \
 && /opt/sesame/bin/sesame operator run --help > /dev/null

FROM python:3.12.12-slim-bookworm
LABEL org.opencontainers.image.title="sesame" \
      org.opencontainers.image.description="Sesame operator: secrets for workflow task pods" \
      org.opencontainers.image.source="https://github.com/sesame-dev/sesame" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
RUN groupadd --system --gid 10001 sesame \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sesame
COPY --from=build /opt/sesame /opt/sesame
ENV PATH=/opt/sesame/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Health (Kopf liveness), metrics, webhook.
EXPOSE 8080 9090 9443
USER 10001:10001
ENTRYPOINT ["sesame", "operator", "run"]
