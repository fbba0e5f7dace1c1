# modelcache-operator: the operator, and the same image for the download Job (modelcache-download),
# the prewarm init container (modelcache-prewarm) and the cleanup Job (modelcache-operator purge).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Keep pip's cache out of the layer.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY hack/install-wheel.sh ./hack/install-wheel.sh
RUN sh hack/install-wheel.sh /src /opt/venv

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelcache-operator" \
      org.opencontainers.image.source="https://github.com/modelcache-dev/modelcache-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# Only the venv: no compilers, no build tools, no source tree.
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The UID the chart, the download Job and the cleanup Job run as (runAsNonRoot needs a numeric USER).
USER 65532:65532
WORKDIR /tmp
EXPOSE 9443 9090 8080
ENTRYPOINT ["modelcache-operator"]
CMD ["run", "--liveness", "http://0.0.0.0:8080/healthz"]
