"""ONNX export of any compressreid model, ONNX Runtime execution, parity checks, latency and the model card."""
