"""Student model families (installed as compressreid.students); importing registers them."""

from compressreid.students import timm_backbone  # noqa: F401  (registers "timm")
from compressreid.students import osnet  # noqa: F401  (registers "osnet", "osnet_ain")
from compressreid.students import mobilenetv3  # noqa: F401  (registers "mobilenetv3_small", "mobilenetv3_large")
