"""Student backbones (docs/method.md §3), one file each behind :class:`SequentialRecommender`.

``get_backbone(name)`` maps the ``{backbone}`` wildcard to a class.
"""
from dllm2rec.student.base import BACKBONES, SequentialRecommender, get_backbone, register_backbone

__all__ = ["BACKBONES", "SequentialRecommender", "get_backbone", "register_backbone"]
