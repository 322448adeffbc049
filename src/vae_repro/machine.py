"""What a job asks of the machine it runs on: the device, a C++ compiler where train.compile
needs one, and malloc's policy for the memory a step frees."""
import ctypes

import torch

from vae_repro.config import Config, ConfigError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda: CUDA is not available on this machine; use device=cpu or device=auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_compile(cfg: Config, device: torch.device) -> None:
    """train.compile on a CPU needs the C++ compiler that torch.compile builds its kernels with; on
    CUDA, the compiled passes cannot be captured in the step's CUDA graph (the capture fails)."""
    if cfg.train.compile and cfg.train.cuda_graph and device.type == "cuda":
        raise ConfigError("train.compile=true: the compiled passes cannot be captured in the CUDA graph that "
                          "replays each step (train.cuda_graph=true); choose one: add train.cuda_graph=false to "
                          "compile, or leave train.compile=false")
    if cfg.train.compile and device.type == "cpu":
        from torch._inductor.cpp_builder import get_cpp_compiler  # here: importing it takes a while
        try:
            get_cpp_compiler()  # torch.compile's own search: $CXX, then g++
        except Exception as e:
            raise ConfigError(f"train.compile=true: torch.compile needs a C++ compiler on a CPU and found none "
                              f"({' '.join(str(e).split())[:120]}); install one (e.g. g++) or leave "
                              "train.compile=false") from None


def keep_freed_memory() -> None:
    """Have glibc's malloc keep freed memory for reuse rather than give it back to the system. A
    step allocates and frees a few MB of temporaries, an evaluation tens of MB; by default glibc
    returns them and takes them again, a page fault per 4 KB each time: about a sixth of a step's
    time and nearly half of an evaluation's at the paper's sizes. The process then holds its peak."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library (macOS, musl) keeps its own policy
        return
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # never trim the heap below 1 GB of free memory
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)  # serve blocks up to 32 MB from the heap, not fresh mappings
