"""stt-operator: serve speech-to-text models on NVIDIA Triton and change them safely."""

__version__ = "0.1.0"

API_GROUP = "stt.dev"
API_VERSION = "v1alpha1"
