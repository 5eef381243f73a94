"""Finish accelerate's process setup where it silently does less than the launch asked for.

Two gaps of accelerate 1.16 (torch 2.13), both found running on CPU processes over gloo:

- `ACCELERATE_USE_FSDP=true` becomes FSDP only on accelerator devices (MULTI_GPU, MULTI_XPU,
  ...); CPU processes stay `MULTI_CPU` and train with plain DDP, checkpoints unsharded. torch's
  FSDP2 (`fully_shard`) and FSDP1 run on CPU tensors over gloo, so we switch the state to FSDP
  the way accelerate does for GPUs, with the plugin it reads from the `FSDP_*` variables.
- `accelerate launch` with `use_cpu: true` in an FSDP or multi-GPU config file does not pass
  `ACCELERATE_USE_CPU` to the ranks: on a machine without GPUs each rank then runs alone, all of
  them writing the same output folder. We refuse that instead of training N copies.
"""

from __future__ import annotations

import os
from typing import Any

from spanlab.errors import SpanlabError


def _flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def finish_setup(acc: Any) -> Any:
    """`acc`, checked against the launch and switched to FSDP on CPU when FSDP was asked for."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and acc.num_processes == 1:
        raise SpanlabError(
            f"{launched} processes were launched but accelerate set up each as a single process "
            f"(no GPU found and ACCELERATE_USE_CPU unset); on CPU run `ACCELERATE_USE_CPU=1 accelerate launch ...`"
        )
    if not _flag("ACCELERATE_USE_FSDP") or acc.distributed_type != DistributedType.MULTI_CPU:
        return acc
    plugin = FullyShardedDataParallelPlugin()
    if acc.mixed_precision != "no":
        plugin.set_mixed_precision(acc.mixed_precision)
    acc.state.fsdp_plugin = plugin
    acc.state.distributed_type = DistributedType.FSDP
    # As accelerate does itself: every later `AcceleratorState()` copies PartialState's type back.
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return acc
