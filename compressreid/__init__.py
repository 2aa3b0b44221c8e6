"""compressreid: distil, prune and quantize re-identification models, gated on retrieval metrics."""

__version__ = "0.1.0"
