# syntax=docker/dockerfile:1
# Tollway gateway image.
#
#   docker build -t tollway/gateway:0.1.0 .
#   docker run -p 8000:8000 -v "$PWD/tollway.yaml:/etc/tollway/tollway.yaml:ro" tollway/gateway:0.1.0
#
# The default command serves the gateway; any other `tollway` command runs in
# its place (`docker run tollway/gateway:0.1.0 emulate --gpu h100 ...`).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---- builder: the project wheel and its dependencies, in a virtualenv -------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/tollway
ENV PATH=/opt/tollway/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY tollway ./tollway
COPY gateway ./gateway
COPY backends ./backends
COPY billing ./billing
COPY policies ./policies
COPY simulator ./simulator
COPY gpu_catalog ./gpu_catalog

# Every dependency ships manylinux wheels for CPython 3.11 (amd64 and arm64),
# so no compiler is needed, here or in the final image.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip install -c constraints.txt /wheels/tollway-*.whl \
    && tollway --help > /dev/null

# ---- final: slim Python with only the virtualenv -----------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="tollway-gateway" \
      org.opencontainers.image.description="OpenAI-compatible inference gateway for AI-agent traffic" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 tollway \
    && useradd --system --uid 10001 --gid tollway --home-dir /var/lib/tollway \
       --no-create-home --shell /usr/sbin/nologin tollway \
    && mkdir -p /var/lib/tollway /etc/tollway \
    && chown tollway:tollway /var/lib/tollway

COPY --from=builder /opt/tollway /opt/tollway

ENV PATH=/opt/tollway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOLLWAY_DATA_DIR=/var/lib/tollway \
    TOLLWAY_CONFIG=/etc/tollway/tollway.yaml

USER 10001:10001
WORKDIR /var/lib/tollway
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]

ENTRYPOINT ["tollway"]
CMD ["serve", "--config", "/etc/tollway/tollway.yaml", "--host", "0.0.0.0", "--port", "8000"]
