"""Head registry; importing this package registers every head."""

from compressreid.modeling.heads.embedding_head import HEADS, EmbeddingHead, build_head

__all__ = ["HEADS", "EmbeddingHead", "build_head"]
