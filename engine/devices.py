"""Which devices exist here, and turning a device name into a torch.device."""

from __future__ import annotations

from engine.errors import DeviceError
from engine.schema import check_device_name


def available_devices() -> list[str]:
    """Devices that exist on this machine: cpu, each cuda:N, mps."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str, option: str = "--device"):
    """'auto' picks cuda, then mps, then cpu; anything absent here raises DeviceError."""
    import torch

    try:
        check_device_name(name, key=option)
    except Exception as err:
        raise DeviceError(str(err)) from None
    here = available_devices()
    if name == "auto":
        pick = next((d for d in here if d.startswith("cuda")), None)
        pick = pick or ("mps" if "mps" in here else "cpu")
        return torch.device(pick)
    requested = name
    if name == "cuda":
        name = "cuda:0"
    if name not in here:
        if name.startswith("cuda") and not any(d.startswith("cuda") for d in here):
            why = f"CUDA is not available on this machine (torch {torch.__version__}"
            why += ", built without CUDA)" if torch.version.cuda is None else ", no GPU found)"
        elif name.startswith("cuda"):
            why = f"there is no {name} here (devices: {', '.join(here)})"
        else:
            why = f"{name} is not available on this machine (devices: {', '.join(here)})"
        raise DeviceError(f"{option} {requested}: {why}")
    return torch.device(name)
