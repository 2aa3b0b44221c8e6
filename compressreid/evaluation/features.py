"""Batched feature extraction with a progress bar and optional flip averaging."""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm


@torch.inference_mode()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device, flip: bool = False,
                     desc: str = "features", progress: bool = True) -> Tuple[torch.Tensor, List[int], int]:
    """Embed every image of ``loader``.

    Returns:
        (features [N, D] float32 on CPU, dataset indices of the embedded images, number skipped as corrupt).
    """
    model.eval()
    feats, indices, skipped = [], [], 0
    for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, dynamic_ncols=True, leave=False):
        skipped += batch["skipped"]
        if len(batch["indices"]) == 0:
            continue
        images = batch["images"].to(device, non_blocking=True)
        out = model(images)
        if flip:
            out = (out + model(torch.flip(images, dims=[3]))) / 2
        feats.append(out.float().cpu())
        indices.extend(int(i) for i in batch["indices"])
    dim = feats[0].shape[1] if feats else 0
    return (torch.cat(feats) if feats else torch.empty(0, dim)), indices, skipped
