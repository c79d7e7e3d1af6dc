"""Speech material the project makes itself: evaluation sets, features, its own ONNX CTC model."""
