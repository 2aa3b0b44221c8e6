"""Meta-architecture registry; importing this package registers every meta-architecture."""

from compressreid.modeling.meta_arch.registry import META_ARCHITECTURES
from compressreid.modeling.meta_arch import baseline  # noqa: F401  (registers)

__all__ = ["META_ARCHITECTURES"]
