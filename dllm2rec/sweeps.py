"""Figure 2's sweep: the parameters it varies, the names of its runs and what they record, defined once.

A sweep point is a run of a method ``dllm2rec-<param>-<value>`` (its name, and its run folder)
that extends ``dllm2rec`` with one parameter changed (``workflow/rules/config.smk`` adds them to
the config). As a grid point records ``params.search`` (:mod:`dllm2rec.selection`), a sweep
point records what it is in its ``params``: ``params.sweep`` = :func:`sweep_params`
(``{"method": "dllm2rec", "values": {<param>: <value>}}``), which ``tables.figure2`` reads
(:func:`sweep_point`); nothing is parsed back out of the name. Standard library only: Snakemake
imports it while building the DAG.
"""
from __future__ import annotations

FIGURE2_PARAMS = ("lambda_d", "gamma_p", "gamma_c", "gamma_o")
BASE_METHOD = "dllm2rec"
SWEEP_KEY = "sweep"  # the key of a sweep point's params (beside "student", "method")


def sweep_method(param: str, value: float) -> str:
    """The method (run) name of one sweep point, e.g. ``dllm2rec-lambda_d-0.9``."""
    return f"{BASE_METHOD}-{param}-{value:g}"


def sweep_params(param: str, value: float) -> dict:
    """What a sweep point records under ``params.sweep``: the method it varies and the value it sets."""
    return {"method": BASE_METHOD, "values": {param: value}}


def sweep_point(params: dict | None) -> tuple[str, float] | None:
    """``(param, value)`` of a run whose ``params`` (its metrics.json's) record a sweep point,
    or None for any other run."""
    sweep = (params or {}).get(SWEEP_KEY)
    if not sweep:
        return None
    (param, value), = sweep["values"].items()
    return param, float(value)
