"""Run under torchrun by benchmarks/gpu_check.py: join the process group with the backend training uses on the
device (nccl on CUDA, gloo on CPU, as compressreid.engine.distributed chooses), all-reduce one tensor, and write
what happened as JSON (rank 0). Needed because the trainer creates no process group at world size 1."""

from __future__ import annotations

import argparse
import datetime
import json
import os

import torch
import torch.distributed as dist


def _nccl_version() -> str:
    version = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old ones
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), required=True)
    parser.add_argument("--out", required=True, help="JSON file rank 0 writes")
    args = parser.parse_args()
    backend = "nccl" if args.device == "cuda" else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=120))
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        value = torch.full((4,), float(rank + 1), device=device)
        dist.all_reduce(value)
        expected = world * (world + 1) / 2  # 1 + 2 + ... + world
        facts = {"backend": dist.get_backend(), "world_size": world, "all_reduce": value.tolist(),
                 "all_reduce_ok": bool(torch.allclose(value.cpu(), torch.full((4,), expected))),
                 "nccl_version": _nccl_version() if backend == "nccl" else None}
        if backend == "nccl":
            dist.barrier(device_ids=[local_rank])
        else:
            dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(facts, handle, indent=2)


if __name__ == "__main__":
    main()
