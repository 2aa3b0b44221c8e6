"""Teacher model families (installed as compressreid.teachers)."""

from compressreid.teachers import mgn  # noqa: F401  (registers "MGN")
from compressreid.teachers import haa  # noqa: F401  (registers "HAA")
