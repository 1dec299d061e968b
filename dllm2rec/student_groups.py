"""Which student runs train together: the groups of fused training (docs/students.md).

Standard library only (Snakemake plans the groups while it builds the DAG). A run is
``(dataset, teacher, backbone, method, seed)`` with ``method`` its run name (a grid point is
``<method>@<key>=<value>,...``) and its params as the per-point rule passes them. Runs share a
group when they have the same dataset, teacher, backbone and **base method** (the searched
method of a grid point, else the method itself) and, for a method that trains stacked
(:meth:`dllm2rec.distill.spec.MethodOptions.can_fuse`), the same :func:`fused_key`: everything
equal but the seed, the student's ``lr`` / ``weight_decay`` and the method's ``fused_scalars``.
Runs of a method that cannot train stacked share a group too (one job trains them one after
another). A group holds at most ``max_members`` runs, in the order the runs were given.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from dllm2rec.distill.spec import parse_options

FUSED_STUDENT_KEYS = ("lr", "weight_decay")  # the student keys members of a stacked group may differ in


@dataclass(frozen=True)
class Run:
    dataset: str
    teacher: str
    backbone: str
    method: str  # the run name
    base: str  # the searched method of a grid point, else ``method``
    seed: int
    params: dict = field(compare=False, hash=False)


@dataclass
class Group:
    name: str  # a rule name: student_<backbone>_<base>_<hash>
    stacked: bool
    runs: list[Run]


def can_stack(params: dict, method: str) -> bool:
    return parse_options(params["method"], method).can_fuse()


def fused_key(params: dict, method: str) -> str:
    """What must be equal between the members of one stacked group (see the module docstring)."""
    student = {k: v for k, v in params["student"].items() if k not in FUSED_STUDENT_KEYS}
    opt = parse_options(params["method"], method)
    options = {k: v for k, v in vars(opt).items() if k not in type(opt).fused_scalars}
    return json.dumps([student, options, type(opt).method], sort_keys=True, default=str)


def plan_groups(runs: list[Run], max_members: int) -> list[Group]:
    """The groups of ``runs`` (see the module docstring), each at most ``max_members`` runs."""
    keyed: dict[tuple, list[Run]] = {}
    for run in runs:
        stacked = can_stack(run.params, run.method)
        key = (run.dataset, run.teacher, run.backbone, run.base, stacked,
               fused_key(run.params, run.method) if stacked else "")
        keyed.setdefault(key, []).append(run)
    groups = []
    for key, members in keyed.items():
        dataset, teacher, backbone, base, stacked, fkey = key
        for start in range(0, len(members), max(1, max_members)):
            chunk = members[start:start + max_members]
            digest = hashlib.sha1(json.dumps([dataset, teacher, fkey, start, [r.method for r in chunk],
                                              [r.seed for r in chunk]]).encode()).hexdigest()[:10]
            name = f"student_{re.sub(r'[^A-Za-z0-9]', '_', backbone)}_{re.sub(r'[^A-Za-z0-9]', '_', base)}_{digest}"
            groups.append(Group(name, stacked, chunk))
    return groups
