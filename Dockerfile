# syntax=docker/dockerfile:1
# stt-operator image: the operator (`stt-operator run`) and, from the same image, the model
# validation / quantization Jobs and the evaluator Deployments it creates.
#
#   docker build -t stt-operator:0.1.0 .
#
# Two stages: the build stage installs the package and its dependencies into a virtual
# environment; the runtime stage copies only that environment onto a clean slim base.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Runtime extras only: `security` holds the model scanners the validation Job runs.
# No dev extras (pytest, ruff, moto) and no local Triton (serving pods use the Triton image).
ARG EXTRAS=security
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Metadata first so the dependency layer is cached while only the sources change.
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN pip install --upgrade pip wheel \
 && pip install ".[${EXTRAS}]" \
 && stt-operator --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="stt-operator" \
      org.opencontainers.image.description="Kubernetes operator that serves speech-to-text models on NVIDIA Triton and changes them safely" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="stt-operator"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STT_OPERATOR_LOG_FORMAT=json
# A fixed unprivileged uid/gid (the "nonroot" convention) that the Helm chart's
# securityContext also pins; no shell login, no home outside /tmp.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
WORKDIR /tmp
# 8080: Kopf liveness (/healthz); 9090: Prometheus /metrics of the operator or evaluator.
EXPOSE 8080 9090
ENTRYPOINT ["stt-operator"]
CMD ["run"]
