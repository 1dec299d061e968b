"""Distillation methods behind one interface, looked up by name (the ``{method}`` wildcard's ``type``)."""
from dllm2rec.distill.base import METHODS, Batch, DistillContext, DistillMethod, TeacherSplit, TeacherTensors, get_method, register_method

__all__ = ["METHODS", "Batch", "DistillContext", "DistillMethod", "TeacherSplit", "TeacherTensors", "get_method", "register_method"]
