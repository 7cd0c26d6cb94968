# syntax=docker/dockerfile:1
# carbon-optimizer production image.
#
# Why it looks like this: a builder stage installs the package and the `server` extra into a
# virtualenv; the runtime stage copies only that venv onto a fresh slim base, so no compiler, pip
# cache or source tree ships. Base images are pinned by exact tag (python 3.11.14, Debian
# bookworm); pin by digest too (`python:3.11.14-slim-bookworm@sha256:…`) in a registry-mirrored
# build — the digest could not be resolved from the machine this file was written on.
# The process runs as an unprivileged user, writes nothing outside /tmp (mount a tmpfs/emptyDir
# there: the root filesystem can be read-only) and answers the HEALTHCHECK on /healthz with the
# standard library only (no curl in the image).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv
RUN python -m venv "$VIRTUAL_ENV"
ENV PATH="/opt/venv/bin:$PATH"
WORKDIR /src
# Dependencies first (cached while only the code changes): install the project's deps from
# pyproject.toml with an empty package, then the real package without re-resolving.
COPY pyproject.toml README.md ./
# Versions are bounded by pyproject.toml; a hash-pinned lock file (pip-compile) would be better.
# hadolint ignore=DL3013
RUN mkdir carbon_optimizer \
    && touch carbon_optimizer/__init__.py \
    && pip install ".[server]" \
    && pip uninstall --yes carbon-optimizer
COPY carbon_optimizer ./carbon_optimizer
RUN pip install --no-deps . \
    && pip uninstall --yes pip setuptools wheel

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="carbon-optimizer" \
      org.opencontainers.image.description="Carbon- and price-aware workload placement API" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:$PATH" \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    CARBON_OPTIMIZER_ENVIRONMENT=production \
    CARBON_OPTIMIZER_DOCS_ENABLED=false \
    CARBON_OPTIMIZER_SERVER__HOST=0.0.0.0 \
    CARBON_OPTIMIZER_SERVER__PORT=8000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY gunicorn.conf.py ./
USER 10001:10001
EXPOSE 8000
# The probe asks the port the server listens on (CARBON_OPTIMIZER_SERVER__PORT, empty = unset =
# 8000, as in Settings), so overriding the port at `docker run -e` keeps the container healthy.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('CARBON_OPTIMIZER_SERVER__PORT') or '8000'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py"]
