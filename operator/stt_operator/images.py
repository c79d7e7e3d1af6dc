"""The images the operator runs when its settings name none (a leaf: builders read these
without importing the settings, which reach the Prometheus and webhook clients)."""

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
DEFAULT_OPERATOR_IMAGE = "ghcr.io/stt-operator/stt-operator:0.1.0"
# The Jobs' image (Dockerfile target `jobs`): validation/quantization Jobs, evaluator Deployments
# and Triton's fetch-model init container. The operator's own image is slim and runs none of them.
DEFAULT_JOBS_IMAGE = "ghcr.io/stt-operator/stt-operator-jobs:0.1.0"
