"""``none``: the plain student (no teacher, no distillation term)."""
from __future__ import annotations

from dllm2rec.distill.base import DistillMethod, register_method
from dllm2rec.distill.spec import NoneOptions


@register_method("none")
class NoDistillation(DistillMethod):
    Options = NoneOptions
