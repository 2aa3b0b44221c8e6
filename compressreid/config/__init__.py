"""Configuration: yacs defaults (``get_cfg``), file/override merging and dumping."""

from compressreid.config.defaults import get_cfg
from compressreid.config.loading import dump_config, load_config, read_yaml_with_bases

__all__ = ["get_cfg", "load_config", "dump_config", "read_yaml_with_bases"]
