# syntax=docker/dockerfile:1
# stt-operator images, one Dockerfile, three targets:
#
#   docker build -t stt-operator:0.1.0 .                        # operator (the default, last stage)
#   docker build --target jobs -t stt-operator-jobs:0.1.0 .     # validation/quantization Jobs, evaluator,
#                                                               # Triton's fetch-model init container
#   docker build --target triton -t stt-triton-cpu:0.1.0 .      # CPU tritonserver (Python backend)
#
# The operator process (`stt-operator run`) needs neither ONNX / onnxruntime nor the model
# scanners, so its image carries only the package's core dependencies; everything that
# opens, scans, quantizes or replays models lives in the `jobs` image.
#
# PYTHON_IMAGE is any Debian-based image with python3 (3.11+), python3-venv and a shared
# libpython (the Triton stub links against it). Locally, hack/build-images.sh passes a base
# made from Debian packages with mmdebstrap, because public registries are unreachable there.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# --- the operator's environment: core dependencies only ---------------------------------
FROM base AS build-operator
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in a layer only pyproject.toml invalidates; then the package itself.
COPY pyproject.toml images/requirements.py ./
RUN pip install --upgrade pip wheel \
 && python requirements.py pyproject.toml > requirements.txt \
 && pip install -r requirements.txt
COPY README.md ./
COPY operator/ ./operator/
# Not editable and no dev extras. Packages' own test suites and the build tools (pip, wheel,
# setuptools) are removed: nothing imports them at run time.
RUN pip install --no-deps . \
 && pip check \
 && stt-operator --help >/dev/null \
 && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
 && { pip uninstall -y pip wheel setuptools >/dev/null 2>&1 || true; }

# --- the Jobs' environment: the operator's plus models, scanners, object storage ---------
FROM base AS build-jobs
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml images/requirements.py ./
RUN pip install --upgrade pip wheel \
 && python requirements.py pyproject.toml jobs > requirements.txt \
 && pip install -r requirements.txt
COPY README.md ./
COPY operator/ ./operator/
RUN pip install --no-deps ".[jobs]" \
 && pip check \
 && stt-operator validate --help >/dev/null \
 && python -m stt_operator.models.builtin /opt/stt-models \
 && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} + \
 && { pip uninstall -y pip wheel setuptools >/dev/null 2>&1 || true; }

# --- tritonserver from the nvidia-pytriton wheel, Python backend, model dependencies -----
FROM base AS build-triton
ARG PYTRITON_VERSION=0.7.0
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Only the wheel's server binary and libraries are used (not the pytriton Python API), so
# its own dependencies are skipped. The models' Python dependencies: numpy, pocketsphinx
# (the built-in recogniser), onnxruntime on CPU (the ONNX runner). numpy 1.x: with numpy 2
# this tritonserver's Python backend (2.51) hands back an empty buffer for a BYTES output, so
# every transcript failed ("output tensor shape does not match size of output").
RUN pip install --upgrade pip \
 && pip install --no-deps "nvidia-pytriton==${PYTRITON_VERSION}" \
 && pip install "numpy<2" pocketsphinx onnxruntime \
 && find /opt/venv -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +
COPY images/triton/layout.py /tmp/layout.py
RUN python /tmp/layout.py /opt/tritonserver \
 && pip uninstall -y nvidia-pytriton pip >/dev/null \
 && rm /tmp/layout.py

# --- runtime images ----------------------------------------------------------------------
FROM base AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="stt-operator"
ENV PATH=/opt/venv/bin:$PATH \
    STT_OPERATOR_LOG_FORMAT=json
# A fixed unprivileged uid/gid (the "nonroot" convention) that the Helm chart's
# securityContext also pins; no shell login, no home outside /tmp.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin nonroot
WORKDIR /tmp

FROM base AS triton
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="stt-triton-cpu" \
      org.opencontainers.image.description="tritonserver (from nvidia-pytriton) on CPU with the Python backend and stt-operator's built-in models" \
      org.opencontainers.image.version="${VERSION}"
# uid 1000 like the NGC image's `triton-server` user, which the operator's pods run as.
RUN groupadd --gid 1000 triton-server \
 && useradd --uid 1000 --gid 1000 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin triton-server
COPY --from=build-triton /opt/venv /opt/venv
COPY --from=build-triton /opt/tritonserver /opt/tritonserver
COPY --from=build-jobs /opt/stt-models /opt/stt-models
# The stub's embedded interpreter finds its prefix from `python3` on PATH: the venv comes first.
ENV PATH=/opt/tritonserver/bin:/opt/venv/bin:$PATH \
    HOME=/tmp
USER 1000:1000
WORKDIR /tmp
EXPOSE 8000 8001 8002
# Pods pass `tritonserver ...` as args, as with the NGC image.
ENTRYPOINT []
CMD ["tritonserver", "--help"]

FROM runtime AS jobs
LABEL org.opencontainers.image.title="stt-operator-jobs" \
      org.opencontainers.image.description="stt-operator validation/quantization Jobs, evaluator and model fetcher"
COPY --from=build-jobs /opt/venv /opt/venv
COPY --from=build-jobs /opt/stt-models /opt/stt-models
USER 65532:65532
# 9090: the evaluator's /metrics.
EXPOSE 9090
ENTRYPOINT ["stt-operator"]
CMD ["--help"]

# The default target (last stage): the operator.
FROM runtime AS operator
LABEL org.opencontainers.image.title="stt-operator" \
      org.opencontainers.image.description="Kubernetes operator that serves speech-to-text models on NVIDIA Triton and changes them safely"
COPY --from=build-operator /opt/venv /opt/venv
USER 65532:65532
# 8080: Kopf liveness (/healthz); 9090: the operator's /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["stt-operator"]
CMD ["run"]
