"""``none``: the plain student (no teacher, no distillation term)."""
from __future__ import annotations

from dllm2rec.distill.base import DistillMethod, register_method


@register_method("none")
class NoDistillation(DistillMethod):
    needs = frozenset()
