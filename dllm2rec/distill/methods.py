"""Import every method module of this package so that each registers itself by name."""
import importlib
import pkgutil

import dllm2rec.distill as _pkg

for _mod in pkgutil.iter_modules(_pkg.__path__):
    if _mod.name not in ("base", "methods", "common", "spec", "teacher_data"):
        importlib.import_module(f"{_pkg.__name__}.{_mod.name}")
