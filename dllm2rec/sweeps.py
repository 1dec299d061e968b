"""Figure 2's sweep: the parameters it varies and the names of its runs, defined once.

A sweep point is a method ``dllm2rec-<param>-<value>`` that extends ``dllm2rec`` with one
parameter changed (``workflow/rules/config.smk`` adds them to the config; ``tables.figure2``
plots them). Standard library only: Snakemake imports it while building the DAG.
"""
from __future__ import annotations

FIGURE2_PARAMS = ("lambda_d", "gamma_p", "gamma_c", "gamma_o")
BASE_METHOD = "dllm2rec"


def sweep_method(param: str, value: float) -> str:
    """The method name of one sweep point, e.g. ``dllm2rec-lambda_d-0.9``."""
    return f"{BASE_METHOD}-{param}-{value:g}"


def parse_sweep_method(name: str) -> tuple[str, float] | None:
    """``(param, value)`` of a sweep point's method name, or None for any other method."""
    for param in FIGURE2_PARAMS:
        prefix = f"{BASE_METHOD}-{param}-"
        if name.startswith(prefix):
            return param, float(name[len(prefix):])
    return None
