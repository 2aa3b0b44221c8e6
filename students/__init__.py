"""Student model families (installed as compressreid.students); importing registers them."""

from compressreid.students import timm_backbone  # noqa: F401  (registers "timm")
