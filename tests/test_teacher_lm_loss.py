"""SFT's token loss without the logits (dllm2rec/teacher/lm_loss.py) equals transformers' loss,
and so do the gradients it sends to the LoRA adapter."""
from __future__ import annotations

import pytest
import torch
from tiny_llm import make_tiny_llama

from dllm2rec.teacher.lm_loss import can_skip_logits, token_loss
from dllm2rec.teacher.sft import collate


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("lm_loss") / "tiny")


def lora_model(folder, dtype=torch.float32, targets=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(targets),
                                             task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # nonzero B, so that every LoRA weight gets a gradient
            torch.nn.init.normal_(p, std=0.1)
    return model


def batch():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 500, (n,), generator=g).tolist() for n in (30, 17, 25, 9, 3)]
    return collate(seqs, pad_id=3)  # right-padded; labels -100 on padding


def loss_and_grads(model, fn, autocast=False):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("chunk", [7, 1024])  # chunks that split the batch's rows, and one chunk
def test_same_loss_and_adapter_gradients_as_transformers(folder, chunk):
    model, b = lora_model(folder), batch()
    want, want_grads = loss_and_grads(model, lambda: model(**b).loss)
    got, grads = loss_and_grads(model, lambda: token_loss(model, b, chunk=chunk))
    assert can_skip_logits(model)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert set(grads) == set(want_grads) and len(grads) == 8  # q and v, A and B, 2 layers
    for name, g in grads.items():
        assert torch.allclose(g, want_grads[name], rtol=1e-4, atol=1e-7), name
        assert want_grads[name].abs().max() > 0


def test_bf16_autocast_matches_too(folder):
    model, b = lora_model(folder, dtype=torch.bfloat16), batch()
    want, want_grads = loss_and_grads(model, lambda: model(**b).loss, autocast=True)
    got, grads = loss_and_grads(model, lambda: token_loss(model, b), autocast=True)
    assert got.item() == pytest.approx(want.item(), rel=1e-3)
    for name, g in grads.items():
        assert torch.allclose(g.float(), want_grads[name].float(), rtol=2e-2, atol=1e-3), name


def test_padding_and_the_last_position_carry_no_loss(folder):
    model, b = lora_model(folder), batch()
    padded = {k: torch.cat([v, v.new_full((v.shape[0], 6), 3 if k == "input_ids" else (0 if k == "attention_mask" else -100))], 1)
              for k, v in b.items()}
    with torch.no_grad():
        assert token_loss(model, padded).item() == pytest.approx(token_loss(model, b).item(), rel=1e-6)


def test_a_trained_lm_head_goes_through_transformers(folder):
    model, b = lora_model(folder, targets=("q_proj", "lm_head")), batch()
    assert not can_skip_logits(model)
    with torch.no_grad():
        assert token_loss(model, b).item() == model(**b).loss.item()
