"""Which device a model runs on, and in which precision: one spelling for the CLI, the API and the app.

    auto     CUDA if available, then Apple's MPS, else the CPU
    cpu      the CPU
    cuda     the current CUDA device; cuda:N the N-th
    mps      Apple silicon

A device that is not there is refused in one line naming the devices that are. Precision:
`auto` is bf16 autocast on a GPU that supports it, fp16 (with a gradient scaler, when training) on
other CUDA GPUs, and fp32 on the CPU and MPS; `bf16`, `fp16` and `fp32` force one (bf16 autocast
also runs on a CPU). Weights are always kept and saved in float32.
"""

from __future__ import annotations

from zoo import ZooError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def available_devices() -> list[str]:
    """The devices this machine offers, e.g. ['cpu'] or ['cpu', 'cuda:0', 'cuda:1']."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def resolve_device(name: str | None = "auto"):
    """`name` ("auto", "cpu", "cuda", "cuda:N", "mps") as a `torch.device`, or `ZooError` in one line."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ZooError(f"Unknown device '{name}': use {', '.join(DEVICE_CHOICES)} "
                       f"(this machine has: {', '.join(available_devices())}).") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index if device.index is not None else (torch.cuda.current_device() if count else 0)
        if index >= count:
            raise ZooError(f"--device {name}: " + ("CUDA is not available here" if not count else
                           f"there is no CUDA device {index}") + f" (available: {', '.join(available_devices())}).")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ZooError(f"--device {name}: MPS is not available here (available: {', '.join(available_devices())}).")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ZooError(f"Unsupported device '{name}': use {', '.join(DEVICE_CHOICES)} "
                       f"(available: {', '.join(available_devices())}).")
    return device


def resolve_precision(precision: str | None, device) -> str:
    """"fp32", "bf16" or "fp16" for `device` (see the module docstring), or `ZooError`."""
    import torch

    precision = (precision or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise ZooError(f"Unknown precision '{precision}': use {', '.join(PRECISIONS)}.")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ZooError("fp16 autocast needs a GPU; on the CPU use bf16 or fp32.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device, precision: str):
    """The autocast context for `precision` on `device` (a no-op context for fp32)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
