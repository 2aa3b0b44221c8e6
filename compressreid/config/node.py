"""The config node type: a yacs ``CfgNode`` whose file and list merges go through compressreid's loader.

So ``get_cfg().merge_from_file("config.yaml")`` accepts a fast-reid yaml (or fast-reid's OUTPUT_DIR dump)
unchanged, exactly as ``load_config`` does, instead of failing on fast-reid's extra keys.
"""

from __future__ import annotations

from typing import Sequence

from yacs.config import CfgNode as _YacsCfgNode


class CfgNode(_YacsCfgNode):
    """yacs ``CfgNode`` with ``_BASE_`` inheritance, fast-reid key compatibility and typed errors on merge."""

    def merge_from_file(self, cfg_filename: str) -> None:
        """Merge a yaml file (and its ``_BASE_`` files); fast-reid-only keys are ignored with one warning.

        Raises:
            ConfigError: missing file, unknown key (with the closest valid key) or a value of the wrong type.
        """
        # imported here: the loader builds on the defaults, which are made of this class
        from compressreid.config.loading import merge_file

        merge_file(self, cfg_filename)

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Merge ``["KEY.SUB", "VALUE", ...]`` overrides with the same checks as ``merge_from_file``."""
        from compressreid.config.loading import merge_overrides

        merge_overrides(self, cfg_list)
