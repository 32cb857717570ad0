"""
Where the model runs, in what precision, and RL's device juggling.

Precision: bf16 autocast runs only on CPUs with native bf16 matrix instructions: AMX (Intel
Xeon 4th gen and later) or AVX512-BF16 (e.g. AMD Zen 4 and later), where training steps ran
1.3-1.6x faster (bench/train_step.py); elsewhere, CUDA included, everything is fp32: without them CPU
bf16 is emulated and slower, and these models are too small to gain from bf16 on a GPU
(docs/RESULTS.md, "bf16").

An RL step has phases that need different modules: encode (the audio encoder), rollout
(the policy), reward (nothing: strings on the CPU), reference (the frozen reference model),
update (the policy and its optimizer state). `Phases` moves onto the compute device only
what the current phase needs and parks the rest on the offload device, so one GPU never
holds the encoder, two LLMs and AdamW's moments at once. It records each phase's wall time,
the megabytes it kept resident on the device, and (CUDA) its peak allocated memory.
On a CPU-only machine compute and offload are the same device: the moves are no-ops and
the bookkeeping still runs.

    phases = Phases(device, {"encoder": enc, "policy": pol, "reference": ref}, optimizer)
    with phases("rollout", "policy"):
        ...
    with phases("update", "policy", optimizer=True):
        ...
    log(phases.stats)
"""
import time
from contextlib import contextmanager

import torch


def _cpu_has_bf16_units():
    """Does this CPU compute bf16 matmuls natively (AMX or AVX512-BF16)? Without them CPU bf16 is
    emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
    except OSError:  # not Linux
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


CPU_BF16 = _cpu_has_bf16_units()
BF16 = True  # bf16 autocast where it is fast (CPU_BF16); train_asr.py --no-bf16 sets it False


def uses_bf16(device):
    """bf16 autocast on CPUs with native bf16 units (and BF16 left on); fp32 everywhere else."""
    return BF16 and device.type == "cpu" and CPU_BF16


def autocast(device):
    """bf16 autocast where uses_bf16 (weights and optimizer state stay fp32); a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device))


def pick_device(name="auto"):
    """"auto" -> cuda if available, else mps, else cpu; any other name as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


def optimizer_tensors(optimizer):
    """The optimizer's state tensors (Adam moments), without the 'step' counters torch keeps on the CPU."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":
                yield state, key, value


def move_optimizer(optimizer, device):
    for state, key, value in list(optimizer_tensors(optimizer)):
        state[key] = value.to(device, non_blocking=True)


def megabytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors) / 2 ** 20


class Phases:
    def __init__(self, device, modules, optimizer=None, offload="cpu"):
        self.device, self.offload = torch.device(device), torch.device(offload)
        self.modules, self.optimizer = modules, optimizer
        self.stats = {}

    @contextmanager
    def __call__(self, name, *needs, optimizer=False):
        unknown = set(needs) - set(self.modules)
        if unknown:
            raise KeyError(f"phase {name!r} needs unknown modules {sorted(unknown)}; known: {sorted(self.modules)}")
        t0 = time.perf_counter()  # the phase's time includes its moves
        for key, module in self.modules.items():  # park first, so the device never holds both
            if key not in needs:
                module.to(self.offload)
        if self.optimizer is not None and not optimizer:
            move_optimizer(self.optimizer, self.offload)
        for key in needs:
            self.modules[key].to(self.device)
        if self.optimizer is not None and optimizer:
            move_optimizer(self.optimizer, self.device)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        yield
        if cuda:
            torch.cuda.synchronize(self.device)
            self.stats[f"peak_mb/{name}"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        self.stats[f"time/{name}"] = time.perf_counter() - t0
        resident = [p for key in needs for p in self.modules[key].parameters()]
        resident += [p for key in needs for p in self.modules[key].buffers()]
        if optimizer and self.optimizer is not None:
            resident += [v for _, _, v in optimizer_tensors(self.optimizer)]
        self.stats[f"resident_mb/{name}"] = megabytes(resident)


class _CompiledOrEager:
    """compile_or_eager's callable: the compiled function until a call of it fails where eager
    succeeds, then (one printed line) the eager one for good."""

    def __init__(self, eager, compiled, name):
        self.eager, self.compiled, self.name = eager, compiled, name

    @property
    def is_compiled(self):
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.eager(*args, **kwargs)
        try:
            with _backward_compiled_at_forward():
                return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 (any compiler failure; the eager run below tells it from a bad input)
            out = self.eager(*args, **kwargs)  # raises too when the inputs, not the compiler, are at fault
            self.compiled = None
            print(f"torch.compile of {self.name} failed ({_one_line(error)}); running it eagerly")
            return out


def _one_line(error):
    """'Type: first line of the message' of the error's root cause (dynamo wraps a backend's
    error in BackendCompilerFailed, whose own first line names only the backend)."""
    while getattr(error, "inner_exception", None) is not None or error.__cause__ is not None:
        error = getattr(error, "inner_exception", None) or error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160] if lines else ''}"


def _backward_compiled_at_forward():
    """AOTAutograd compiles a graph's backward lazily, at the first backward(), outside any
    wrapper of the forward: this makes it compile (and fail, if it fails) in the forward call."""
    import contextlib

    import torch._functorch.config as functorch_config
    if hasattr(functorch_config, "force_non_lazy_backward_lowering"):  # recent torch; older ones compile it lazily
        return functorch_config.patch(force_non_lazy_backward_lowering=True)
    return contextlib.nullcontext()


def compile_or_eager(fn, enabled=True, name=None, **options):
    """`fn` (a module or a function) through torch.compile(fn, **options) when enabled, else fn
    itself. Never a crash for the compiler's sake: torch.compile is lazy and fails at a call (no C++
    compiler, an unsupported op, a shape it cannot handle, a new shape's recompile), so every call
    of the compiled function is tried, and on the first failure that an eager run of the same call
    does not share, one line is printed and fn runs eagerly from then on (a failure eager shares is
    the input's: it is raised). So fn should be a forward, with no side effects a retried call would
    repeat (not an optimizer step). A module keeps its parameters and state_dict; call the result in
    its place:  encoder = compile_or_eager(model.encoder, cfg.compile); hidden = encoder(x, n).
    A module that other code calls (SpeechLM calls self.llm) gets its forward replaced instead:
    llm.forward = compile_or_eager(llm.forward, on) (passing llm itself there would recurse).
    The result's .is_compiled says which path it is on; .eager is fn."""
    if not enabled:
        return fn
    name = name or getattr(fn, "__qualname__", type(fn).__name__)
    try:
        compiled = torch.compile(fn, **options)
    except Exception as error:  # noqa: BLE001 (e.g. a Python version torch.compile does not support)
        print(f"torch.compile of {name} unavailable ({_one_line(error)}); running it eagerly")
        return fn
    return _CompiledOrEager(fn, compiled, name)
