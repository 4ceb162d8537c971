# syntax=docker/dockerfile:1
# The Sesame operator image: `docker build -t ghcr.io/sesame-dev/sesame:0.1.0 .`
# (the Helm chart's default image; keep the tag equal to pyproject's version and the chart's appVersion).
#
# Two stages: the first installs the package and its runtime dependencies (`.[operator]`: Kopf,
# the Kubernetes client, prometheus-client, cryptography, PyYAML) into a virtualenv; the second
# copies only that virtualenv onto the same slim base. No compilers, no pip cache, no tests, no
# dev tooling in the final image.
#
# The base is Python 3.11 on Debian bookworm, pinned by tag and by the digest of its multi-platform
# index: the same Python minor and Debian release as `tools/images.py`, which builds this image
# without Docker for the local node (`make operator-image`); tests/unit/test_dockerfile.py keeps the
# two equal (entrypoint, user, paths, environment, ports, Python version line). To move to a newer
# patch release, update the tag and the digest together
# (`docker buildx imagetools inspect python:3.11.X-slim-bookworm` prints the index digest).

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3 AS build
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

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3
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
