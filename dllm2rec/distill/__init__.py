"""Distillation methods behind one interface, looked up by name (the ``{method}`` wildcard's ``type``).

The names below are imported on first use, so ``import dllm2rec.distill.spec`` (what the
workflow reads while it builds the DAG) does not import torch.
"""
import importlib

__all__ = ["METHODS", "Batch", "DistillContext", "DistillMethod", "TeacherSplit", "TeacherTensors", "get_method", "register_method"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module("dllm2rec.distill.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
