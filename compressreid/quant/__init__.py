"""INT8 through ONNX Runtime: calibration on training images, PTQ, QAT, sensitivity and accuracy-aware fallback."""
