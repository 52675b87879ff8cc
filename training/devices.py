"""Which device a Horovod rank trains on, and in which precision.

`device_plan` is a pure function of what the rank knows (its local rank and the number of ranks
on its node, the GPUs TensorFlow sees, the GPUs Spark assigned to its task, the settings);
`configure_devices` applies the plan to TensorFlow before anything else touches a device.
deploy/GPU.md describes the same rules for operators.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

MIXED_POLICY = "mixed_float16"
FLOAT32_POLICY = "float32"


@dataclass(frozen=True)
class DevicePlan:
    gpu: int | None             # index (among the GPUs TensorFlow sees) this rank keeps; None = CPU
    hide_gpus: bool             # CPU training on a node with GPUs: make them invisible
    memory_growth: bool         # allocate GPU memory as needed, not all of it at start-up
    policy: str                 # Keras global dtype policy
    intra_op_threads: int | None
    inter_op_threads: int | None

    def describe(self) -> str:
        where = f"gpu:{self.gpu}" if self.gpu is not None else f"cpu:{self.intra_op_threads}threads"
        return f"{where}/{self.policy}"


def device_plan(local_rank: int, local_size: int, visible_gpus: int, use_gpu: bool,
                mixed_precision: bool, cpu_count: int, assigned_gpus: Sequence[str] = ()
                ) -> DevicePlan:
    """One GPU per rank: the GPU Spark assigned to the rank's task (GPU-aware scheduling, as
    horovod.spark reports it), else the GPU numbered like the rank's local rank (horovodrun).
    Without GPUs, the node's cores are shared among its ranks. mixed_precision sets the
    mixed_float16 policy on either device (on CPUs it is slower, and is there to be tested)."""
    policy = MIXED_POLICY if mixed_precision else FLOAT32_POLICY
    if not use_gpu:
        threads = max(1, cpu_count // max(1, local_size))
        return DevicePlan(None, visible_gpus > 0, False, policy, threads, 2)
    if visible_gpus == 0:
        raise RuntimeError("train.use_gpu is true but TensorFlow sees no GPU on this node")
    if assigned_gpus:
        address = int(assigned_gpus[0])
        if address < visible_gpus:
            gpu = address
        elif visible_gpus == 1:
            # The container or cgroup already shows this task its one GPU, under index 0.
            gpu = 0
        else:
            raise RuntimeError(f"Spark assigned GPU {address} to this rank's task, but TensorFlow "
                               f"sees {visible_gpus} GPUs (0..{visible_gpus - 1}): check the "
                               "executor's GPU discovery script and CUDA_VISIBLE_DEVICES")
    else:
        if local_size > visible_gpus:
            raise RuntimeError(f"{local_size} ranks on this node but TensorFlow sees {visible_gpus} "
                               f"GPU(s): one GPU per rank, so lower train.num_proc per node to "
                               f"{visible_gpus} or give each rank a GPU of its own")
        gpu = local_rank
    return DevicePlan(gpu, False, True, policy, None, None)


def spark_assigned_gpus() -> list[str]:
    """The GPU addresses Spark assigned to this rank's task under horovod.spark.run; empty under
    horovodrun or in process."""
    try:
        from horovod.spark.task import get_available_devices
    except ImportError:
        return []
    return list(get_available_devices())


def configure_devices(hvd, use_gpu: bool, mixed_precision: bool) -> DevicePlan:
    """Applies the rank's plan to TensorFlow (before any op runs) and returns it."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    plan = device_plan(hvd.local_rank(), hvd.local_size(), len(gpus), use_gpu, mixed_precision,
                       os.cpu_count() or 1, spark_assigned_gpus() if use_gpu else ())
    if plan.memory_growth:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    if plan.gpu is not None:
        tf.config.set_visible_devices(gpus[plan.gpu], "GPU")
    elif plan.hide_gpus:
        tf.config.set_visible_devices([], "GPU")
    if plan.intra_op_threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(plan.intra_op_threads)
    if plan.inter_op_threads is not None:
        tf.config.threading.set_inter_op_parallelism_threads(plan.inter_op_threads)
    tf.keras.mixed_precision.set_global_policy(plan.policy)
    return plan
