"""Load, merge and freeze configs: ``_BASE_`` inheritance, fast-reid keys, misspelling suggestions."""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Dict, Iterable, List, Sequence

import yaml
from yacs.config import CfgNode as CN


from compressreid.config.defaults import get_cfg
from compressreid.config.fastreid_keys import check_ignorable_value, is_fastreid_only
from compressreid.config.fastreid_legacy import translate_legacy_values
from compressreid.config.validate import validate_config
from compressreid.errors import ConfigError

logger = logging.getLogger(__name__)
BASE_KEY = "_BASE_"


def read_yaml_with_bases(path: str, _chain: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a yaml file as a dict, recursively merging the files named by ``_BASE_`` underneath it.

    Raises:
        ConfigError: the file is missing, not a mapping, not valid yaml, or inherits from itself.
    """
    path = os.path.abspath(path)
    if path in _chain:
        raise ConfigError(f"config {path}: _BASE_ inheritance loops back to itself")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid yaml: {str(exc).splitlines()[0]}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a yaml mapping, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    bases = [base] if isinstance(base, str) else list(base)
    merged: Dict[str, Any] = {}
    for base_path in bases:
        if not os.path.isabs(base_path):
            base_path = os.path.join(os.path.dirname(path), base_path)
        _deep_update(merged, read_yaml_with_bases(base_path, (*_chain, path)))
    _deep_update(merged, data)
    return merged


def _deep_update(target: Dict[str, Any], update: Dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _all_keys(node: CN, prefix: str = "") -> List[str]:
    """Every dotted key, sections included, so a misspelled section gets the section as suggestion."""
    keys = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if isinstance(value, CN):
            keys.extend(_all_keys(value, full + "."))
    return keys


def _unknown_key_error(cfg: CN, key: str, source: str) -> ConfigError:
    match = difflib.get_close_matches(key, _all_keys(cfg), n=1, cutoff=0.6)
    hint = f"; did you mean '{match[0]}'?" if match else ""
    return ConfigError(f"unknown config key '{key}' in {source}{hint}")


def _filter_known(cfg: CN, data: Dict[str, Any], source: str, ignored: List[str], prefix: str = "") -> Dict:
    """Drop fast-reid-only keys (collected in ``ignored``), fail on other unknown keys, coerce int->float."""
    kept: Dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if not isinstance(key, str) or key not in cfg:
            if isinstance(key, str) and is_fastreid_only(full if not isinstance(value, dict) else full + "."):
                check_ignorable_value(full, value, source)
                ignored.append(full)
                continue
            raise _unknown_key_error(get_cfg(), full, source)
        default = cfg[key]
        if isinstance(default, CN):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{full}' in {source} must be a mapping, got {value!r}")
            kept[key] = _filter_known(default, value, source, ignored, full + ".")
            continue
        value = CN._decode_cfg_value(value)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and value is not None and type(default) is not type(value):
            compatible = {tuple, list}
            if not ({type(default), type(value)} <= compatible):
                raise ConfigError(
                    f"config key '{full}' in {source} expects {type(default).__name__}, got {value!r}"
                )
        kept[key] = value
    return kept


def merge_dict(cfg: CN, data: Dict[str, Any], source: str) -> List[str]:
    """Merge a nested dict into ``cfg``; returns the fast-reid-only keys that were ignored.

    Raises:
        ConfigError: ``cfg`` is frozen (yacs' merge would write through its item assignment regardless).
    """
    if cfg.is_frozen():
        raise ConfigError(f"cannot merge {source} into a frozen config; merge into cfg.clone() or load with freeze=False")
    ignored: List[str] = []
    filtered = _filter_known(cfg, data, source, ignored)
    cfg.merge_from_other_cfg(CN(filtered))
    return ignored


def overrides_to_dict(pairs: Sequence[str]) -> Dict[str, Any]:
    """Turn ``["KEY.SUB", "VALUE", ...]`` command-line overrides into a nested dict."""
    if len(pairs) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd number of items: {list(pairs)}")
    nested: Dict[str, Any] = {}
    for key, raw in zip(pairs[0::2], pairs[1::2]):
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = raw
    return nested


def _warn_ignored(ignored: List[str]) -> None:
    if ignored:
        logger.warning("ignoring %d fast-reid key(s) compressreid does not use: %s", len(ignored), ", ".join(ignored))


def read_config_file(cfg: CN, config_file: str) -> Dict[str, Any]:
    """A config file as a mapping (``_BASE_`` files merged), older fast-reid values translated to v1.x names.

    ``cfg`` supplies MODEL.META_ARCHITECTURE when the file does not set it.
    """
    data = read_yaml_with_bases(config_file)
    model = data.get("MODEL")
    meta_architecture = model.get("META_ARCHITECTURE") if isinstance(model, dict) else None
    translated = translate_legacy_values(data, meta_architecture or cfg.MODEL.META_ARCHITECTURE)
    if translated:
        logger.info("%s: older fast-reid values translated: %s", config_file, "; ".join(translated))
    return data


def merge_file(cfg: CN, config_file: str) -> List[str]:
    """Merge ``config_file`` (with its ``_BASE_`` files) into ``cfg``, warning once about fast-reid-only keys.

    This is what ``cfg.merge_from_file`` runs. Returns the ignored fast-reid keys.
    """
    ignored = merge_dict(cfg, read_config_file(cfg, config_file), config_file)
    _warn_ignored(ignored)
    return ignored


def merge_overrides(cfg: CN, overrides: Sequence[str]) -> List[str]:
    """Merge ``KEY VALUE`` command-line overrides into ``cfg``; what ``cfg.merge_from_list`` runs."""
    ignored = merge_dict(cfg, overrides_to_dict(list(overrides)), "command-line overrides")
    _warn_ignored(ignored)
    return ignored


def load_config(config_file: str = "", overrides: Iterable[str] = (), freeze: bool = True) -> CN:
    """Defaults, then ``config_file`` (with ``_BASE_`` files), then ``KEY VALUE`` overrides; range-checked, frozen.

    fast-reid keys that compressreid does not use are listed once in a warning and ignored.

    Raises:
        ConfigError: missing file, unknown key (with the closest valid key), a value of the wrong type, or a budget
            out of its range (see ``compressreid.config.validate``).
    """
    cfg = get_cfg()
    ignored: List[str] = []
    if config_file:
        ignored += merge_dict(cfg, read_config_file(cfg, config_file), config_file)
    overrides = list(overrides)
    if overrides:
        ignored += merge_dict(cfg, overrides_to_dict(overrides), "command-line overrides")
    _warn_ignored(ignored)
    validate_config(cfg)
    if freeze:
        cfg.freeze()
    return cfg


def dump_config(cfg: CN, path: str) -> str:
    """Write the merged config, unchanged, atomically to ``path``."""
    from compressreid.engine.io import atomic_write_text

    atomic_write_text(path, cfg.dump())
    return path
