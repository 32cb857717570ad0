import time

import pytest
import torch
from torch import nn

from nanospeechrl.devices import Phases, megabytes, optimizer_tensors, pick_device

MB = 2 ** 20


def test_pick_device_cpu():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="accelerator present")
def test_pick_device_auto_without_accelerator_is_cpu():
    assert pick_device("auto") == torch.device("cpu")
    assert pick_device() == torch.device("cpu")


def cpu_setup():
    torch.manual_seed(0)
    policy = nn.Linear(8, 4)  # 8*4 + 4 = 36 fp32 values = 144 bytes
    reference = nn.Linear(8, 16)  # 8*16 + 16 = 144 fp32 values = 576 bytes
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    policy(torch.randn(3, 8)).square().sum().backward()
    opt.step()
    opt.zero_grad()
    return policy, reference, opt


def test_megabytes():
    assert megabytes([torch.zeros(MB, dtype=torch.uint8), torch.zeros(MB // 4)]) == 2.0
    assert megabytes([]) == 0


def test_optimizer_tensors_are_adam_moments_without_step():
    policy, _, opt = cpu_setup()
    keys = sorted(k for _, k, _ in optimizer_tensors(opt))
    assert keys == ["exp_avg"] * 2 + ["exp_avg_sq"] * 2  # weight and bias
    assert megabytes(v for _, _, v in optimizer_tensors(opt)) == 2 * 36 * 4 / MB


def test_phases_on_cpu_record_time_and_resident_megabytes():
    policy, reference, opt = cpu_setup()
    state_before = {k: v.clone() for s in opt.state.values() for k, v in s.items() if k != "step"}
    phases = Phases("cpu", {"policy": policy, "reference": reference}, opt)
    x = torch.randn(2, 8)
    with phases("rollout", "policy"):
        with torch.no_grad():
            policy(x)
        time.sleep(0.01)
    with phases("reference", "reference"):
        with torch.no_grad():
            reference(x)
    with phases("update", "policy", optimizer=True):
        policy(x).sum().backward()
        opt.step()
        opt.zero_grad()
    with phases("reward"):
        pass
    s = phases.stats
    for name in ("rollout", "reference", "update", "reward"):
        assert s[f"time/{name}"] >= 0
    assert s["time/rollout"] >= 0.01
    assert s["resident_mb/rollout"] == 144 / MB  # policy parameters only, no optimizer state
    assert s["resident_mb/reference"] == 576 / MB
    assert s["resident_mb/update"] == 3 * 144 / MB  # parameters + exp_avg + exp_avg_sq
    assert s["resident_mb/reward"] == 0
    assert not any(k.startswith("peak_mb/") for k in s)  # CUDA only
    # the CPU moves are no-ops: modules, state and counters stay where they were and keep working
    assert all(p.device.type == "cpu" for p in [*policy.parameters(), *reference.parameters()])
    state = opt.state[policy.weight]
    assert int(state["step"]) == 2
    assert not torch.equal(state["exp_avg"], state_before["exp_avg"])  # the update phase stepped


def test_phases_unknown_module_raises_key_error():
    policy, reference, opt = cpu_setup()
    phases = Phases("cpu", {"policy": policy, "reference": reference}, opt)
    with pytest.raises(KeyError, match="encoder"):
        with phases("encode", "encoder"):
            pass
    assert phases.stats == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rollout_peak_excludes_optimizer_state():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    policy = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(4)])  # ~64 MB fp32
    reference = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(4)])
    params_mb = megabytes(list(policy.parameters()))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    phases = Phases(dev, {"policy": policy, "reference": reference}, opt)
    x = torch.randn(8, 2048, device=dev)
    policy.to(dev)(x).sum().backward()  # the first matmuls allocate a cuBLAS workspace per thread
    policy.zero_grad(set_to_none=True)  # (32 MB on an H100; backward runs on another), kept for good
    other_mb = torch.cuda.memory_allocated(dev) / 2 ** 20 - params_mb  # memory no phase owns: workspaces, x

    def state_devices():
        return {v.device.type for _, _, v in optimizer_tensors(opt)}

    with phases("update", "policy", optimizer=True):
        assert all(p.device.type == "cuda" for p in policy.parameters())
        assert all(p.device.type == "cpu" for p in reference.parameters())
        policy(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        assert state_devices() == {"cuda"}
    state_mb = megabytes([v for _, _, v in optimizer_tensors(opt)])
    assert state_mb == pytest.approx(2 * params_mb)
    assert phases.stats["peak_mb/update"] >= params_mb + state_mb
    assert phases.stats["resident_mb/update"] == pytest.approx(params_mb + state_mb)
    saved = [v.cpu().clone() for _, _, v in optimizer_tensors(opt)]

    with phases("rollout", "policy"):
        assert state_devices() == {"cpu"}
        with torch.no_grad():
            for _ in range(3):
                policy(x)
    rollout_mb = phases.stats["peak_mb/rollout"] - other_mb
    assert params_mb <= rollout_mb < params_mb + state_mb / 2  # clearly without the moments
    assert phases.stats["resident_mb/rollout"] == pytest.approx(params_mb)

    with phases("reference", "reference"):
        assert all(p.device.type == "cpu" for p in policy.parameters())
        assert state_devices() == {"cpu"}
        with torch.no_grad():
            reference(x)
    assert phases.stats["peak_mb/reference"] - other_mb < params_mb + state_mb / 2

    with phases("update", "policy", optimizer=True):
        assert state_devices() == {"cuda"}
        moments = [v for _, _, v in optimizer_tensors(opt)]
        assert len(moments) == len(saved) == 16  # 8 tensors x (exp_avg, exp_avg_sq)
        assert all(torch.equal(v.cpu(), w) for v, w in zip(moments, saved))  # the round trip kept them
        policy(x).square().mean().backward()
        opt.step()
