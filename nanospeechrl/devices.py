"""Where the model runs. (Phase placement for RL's device juggling lands here too.)"""
import torch


def pick_device(name="auto"):
    """"auto" -> cuda if available, else mps, else cpu; any other name as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
