"""Where a fit runs: the device, the precision, and the other processes when there are several.

    engine = make_engine(device="auto", precision="auto")

One process (`python -m transfer fit`, the app): the device is `zoo.devices.resolve_device`'s
(CUDA, then MPS, else the CPU). On CUDA the loops autocast to bf16 (fp16 with a gradient scaler on
GPUs without bf16), use channels-last tensors, cuDNN's autotuner and non-blocking copies from
pinned memory.

Several processes (`accelerate launch -m transfer fit ...`, or `torchrun`): Hugging Face Accelerate
owns the process group (gloo on CPUs, NCCL on GPUs) and each process's device; the model is wrapped
in DistributedDataParallel by `accelerator.prepare`, data loaders are sharded between the processes
(`split_batches`: the global batch stays `batch_size`, so a run on N processes follows the same
schedule as on one), validation logits are gathered from every process (`gather_for_metrics` drops
the padding), and a stop (cancel or time budget) on any process stops all of them at the same
batch. Only the main process writes the zoo and the caches, and shows progress.

The Accelerator is made only for a distributed launch: it is a process-wide singleton, and one
process (the app) may run many fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch

from transfer import DataError
from zoo import ZooError
from zoo.devices import autocast, resolve_device, resolve_precision

MAX_WORKERS = 4  # data loader processes at most (image decoding and augmentation)


@dataclass
class Engine:
    device: torch.device
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (autocast; weights stay float32)
    workers: int = 0  # data loader processes
    accelerator: Any = None  # accelerate.Accelerator when launched as several processes

    # --- who am I ---------------------------------------------------------------------------------

    @property
    def distributed(self) -> bool:
        return self.accelerator is not None and self.accelerator.num_processes > 1

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.distributed else 1

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.distributed else 0

    @property
    def is_main(self) -> bool:
        return not self.distributed or self.accelerator.is_main_process

    def local(self) -> "Engine":
        """This process's engine without the others (for work already divided between them)."""
        return replace(self, accelerator=None)

    def describe(self) -> dict[str, Any]:
        """For transfer.json: where the fit ran."""
        return {"device": str(self.device), "precision": self.precision, "processes": self.world_size,
                "workers": self.workers, "threads": torch.get_num_threads()}

    # --- computing -----------------------------------------------------------------------------------

    def autocast(self):
        return autocast(self.device, self.precision)

    def grad_scaler(self):
        """fp16 needs its loss scaled (bf16 and fp32 do not): a `torch.amp.GradScaler`, or None."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=self.device.type == "cuda")

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    # --- several processes ---------------------------------------------------------------------------

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around `model` (already on the device) when there are several processes."""
        return self.accelerator.prepare_model(model) if self.distributed else model

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model) if self.distributed else model

    def prepare_loader(self, loader):
        """Each process gets its share of every batch (the global batch is the loader's)."""
        return self.accelerator.prepare_data_loader(loader) if self.distributed else loader

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's rows of an evaluation, in order, without the padding of the last batch."""
        return self.accelerator.gather_for_metrics(tensor) if self.distributed else tensor

    def any_process(self, flag: bool) -> bool:
        """True on every process when `flag` is True on any (a stop must stop all at the same batch)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.accelerator.reduce(value, reduction="sum").item() > 0)

    def share(self, value: Any) -> Any:
        """The main process's `value`, on every process (a choice that must be the same everywhere)."""
        if not self.distributed:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def my_share(self, count: int) -> range:
        """The rows of `count` that this process works on (contiguous, in process order)."""
        if not self.distributed:
            return range(count)
        per, extra = divmod(count, self.world_size)
        rank = self.accelerator.process_index
        start = rank * per + min(rank, extra)
        return range(start, start + per + (1 if rank < extra else 0))

    def gather_objects(self, values: list) -> list:
        """Every process's list, concatenated in process order."""
        if not self.distributed:
            return values
        from accelerate.utils import gather_object

        return gather_object(values)

    def wait(self) -> None:
        if self.distributed:
            self.accelerator.wait_for_everyone()


def launched_distributed() -> bool:
    """Started by `accelerate launch` or `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def cpu_engine() -> Engine:
    """One process on the CPU, in float32, decoding in this process (tests, quick passes)."""
    return Engine(device=torch.device("cpu"))


def make_engine(device: str | None = "auto", precision: str | None = "auto", workers: int | None = None) -> Engine:
    """The engine for a fit: see the module docstring. Bad settings raise `DataError` in one line."""
    try:
        if launched_distributed():
            from accelerate import Accelerator
            from accelerate.utils import DataLoaderConfiguration

            on_cpu = (device or "auto") == "cpu" or not torch.cuda.is_available()  # CPUs: gloo
            accelerator = Accelerator(cpu=on_cpu, device_placement=False,
                                      dataloader_config=DataLoaderConfiguration(split_batches=True))
            chosen = accelerator.device
            if (device or "auto") not in ("auto", chosen.type, str(chosen)):
                raise DataError(f"--device {device}: this process was launched on {chosen} "
                                "(choose devices with accelerate launch / torchrun, and leave --device at auto)")
        else:
            accelerator, chosen = None, resolve_device(device)
        resolved_precision = resolve_precision(precision, chosen)
    except ZooError as error:
        raise DataError(str(error)) from None
    if chosen.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    if workers is None:
        workers = default_workers(accelerator.num_processes if accelerator is not None else 1)
    return Engine(device=chosen, precision=resolved_precision, workers=max(0, workers), accelerator=accelerator)


def default_workers(processes: int = 1) -> int:
    """Data loader processes per training process: the cores left over, at most MAX_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_WORKERS, cores // processes - 1))
