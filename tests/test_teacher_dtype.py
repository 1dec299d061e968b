"""The teacher's ``dtype: auto``: bf16 on a CPU only where bf16 is native (or measured fast), fp32 otherwise."""
import pytest
import torch

import dllm2rec.teacher.model as model_mod
from dllm2rec.io import UserError
from dllm2rec.teacher.model import cpu_bf16_is_fast, resolve_dtype


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU with the given torch checks; the cached decision is cleared around each test."""

    def set_cpu(machine="x86_64", amx=False, avx512_bf16=False, capability="AVX2", timings=None):
        monkeypatch.setattr(model_mod.platform, "machine", lambda: machine)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        timed = []

        def fake_time(dtype, *args, **kwargs):
            timed.append(dtype)
            return (timings or {})[dtype]

        monkeypatch.setattr(model_mod, "_matmul_seconds", fake_time)
        cpu_bf16_is_fast.cache_clear()
        return timed

    yield set_cpu
    cpu_bf16_is_fast.cache_clear()


def test_avx2_only_cpu_gets_float32(cpu, capsys):
    timed = cpu(capability="AVX2")
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype(None, "cpu") == torch.float32
    assert timed == []  # decided from the CPU's capability, nothing timed
    assert "teacher dtype auto: float32 (the CPU has no AVX512-BF16 or AMX (torch reports AVX2)" in capsys.readouterr().err


@pytest.mark.parametrize("amx,avx512_bf16,why", [(False, True, "AVX512-BF16"), (True, False, "AMX"), (True, True, "AMX")])
def test_native_bf16_cpu_gets_bfloat16(cpu, amx, avx512_bf16, why):
    cpu(amx=amx, avx512_bf16=avx512_bf16, capability="AVX512")
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    assert cpu_bf16_is_fast() == (True, f"the CPU has {why}")


def test_avx512_without_bf16_gets_float32(cpu):
    cpu(capability="AVX512")
    assert resolve_dtype("auto", "cpu") == torch.float32


@pytest.mark.parametrize("t16,t32,expected", [(0.001, 0.003, torch.bfloat16), (0.041, 0.001, torch.float32)])
def test_other_cpus_are_timed_once(cpu, t16, t32, expected):
    timed = cpu(machine="aarch64", timings={torch.bfloat16: t16, torch.float32: t32})
    assert resolve_dtype("auto", "cpu") == expected
    assert resolve_dtype("auto", "cpu") == expected
    assert timed == [torch.bfloat16, torch.float32]  # the answer is cached for the process


def test_explicit_dtypes_are_kept(cpu):
    cpu(capability="AVX2")
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16  # the user's choice, even where slow
    assert resolve_dtype("float16", "cuda") == torch.float16
    assert resolve_dtype(torch.float32, "cpu") == torch.float32
    with pytest.raises(UserError, match="not one of auto, float32, bfloat16, float16"):
        resolve_dtype("fp8", "cpu")


@pytest.mark.parametrize("bf16,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_dtype("auto", "cuda:0") == expected


def test_timing_helper_runs():
    assert 0 < model_mod._matmul_seconds(torch.float32, n=32, repeats=1) < 5
