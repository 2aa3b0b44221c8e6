"""Calibration images for PTQ: a seeded sample of the TRAINING split (never query or gallery), test transform."""

from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader
from yacs.config import CfgNode

from compressreid.data.build import build_test_loader, load_train_data
from compressreid.errors import DataError

logger = logging.getLogger(__name__)


def calibration_batches(cfg: CfgNode, num_images: int, batch_size: int, seed: int = 0) -> List[torch.Tensor]:
    """``num_images`` training images (sampled with ``seed``), resized as at test time, in batches.

    Raises:
        DataError: ``num_images`` < 1, or the training split has no readable image.
    """
    if num_images < 1:
        raise DataError(f"QUANT.CALIBRATION.NUM_IMAGES is {num_images}: expected at least 1 training image")
    records = load_train_data(cfg).records
    if not records:
        raise DataError(f"calibration set is empty: the training split of {list(cfg.DATASETS.NAMES)} has no images")
    if num_images > len(records):
        logger.warning("QUANT.CALIBRATION.NUM_IMAGES %d > %d training images: calibrating on all of them",
                       num_images, len(records))
    chosen = np.random.default_rng(seed).choice(len(records), size=min(num_images, len(records)), replace=False)
    loader_cfg = cfg.clone()
    loader_cfg.defrost()
    loader_cfg.TEST.IMS_PER_BATCH = batch_size
    batches = [batch["images"] for batch in build_test_loader(loader_cfg, [records[i] for i in sorted(chosen)])
               if len(batch["indices"])]
    if not batches:
        raise DataError("calibration set is empty: none of the sampled training images could be read")
    logger.info("calibration: %d training images in %d batches", sum(len(b) for b in batches), len(batches))
    return batches


class BatchReader(CalibrationDataReader):
    """ONNX Runtime's calibration protocol over in-memory batches (re-iterable via ``rewind``)."""

    def __init__(self, input_name: str, batches: List[torch.Tensor]):
        self.input_name, self.batches = input_name, batches
        self._iterator: Optional[Iterator[torch.Tensor]] = None
        self.rewind()

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        batch = next(self._iterator, None)
        return None if batch is None else {self.input_name: batch.numpy().astype(np.float32)}

    def rewind(self) -> None:
        self._iterator = iter(self.batches)
