"""Our decoding loop (dllm2rec.teacher.beam) returns the same beams as transformers ``generate``.

A tiny random LLaMA (fp32) whose output layer is sharpened, with the EOS and line-break tokens made
likely, so that beams end at different lengths; the reference is ``model.generate`` with an
independent, text-level "answer closed" stopping criterion.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_llm import WORDS, make_tokenizer

from dllm2rec.io import UserError
from dllm2rec.teacher.beam import Decoder, answer_closed, answer_table, token_batches
from dllm2rec.teacher.prompts import clean_generation, format_prompt

MAX_NEW = 12


@pytest.fixture(scope="module")
def setup():
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    table = answer_table(tok, len(tok))
    with torch.no_grad():
        w = model.lm_head.weight
        w *= 8
        texts = tok.batch_decode([[i] for i in range(len(tok))])
        w[torch.tensor(['"' in t for t in texts])] *= 1.8  # quotes (answers start with one)
        w[(table[2] == 3) & (table[0] == 2)] *= 2.5  # content followed by a line break (closes the answer)
        w[tok.eos_token_id] *= 4.0  # some beams end early (EOS) under every setting of test_same_beams_as_hf_generate
    rng = np.random.default_rng(0)
    prompts = []
    for _ in range(5):
        titles = [" ".join(x.title() for x in rng.choice(WORDS, size=rng.integers(1, 4))) for _ in range(rng.integers(1, 6))]
        prompts.append(tok(format_prompt(titles, "movie"))["input_ids"])
    return model, tok, prompts


def hf_beams(model, tok, prompt, num_beams, length_penalty, early_stopping, stop_at_answer):
    from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

    class TextClosed(StoppingCriteria):
        def __call__(self, ids, scores, **kwargs):
            texts = tok.batch_decode(ids[:, len(prompt):], skip_special_tokens=True)
            return torch.tensor([answer_closed(t) for t in texts], device=ids.device)

    beam = num_beams > 1
    gc = GenerationConfig(num_beams=num_beams, max_new_tokens=MAX_NEW, do_sample=False, num_return_sequences=num_beams,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, length_penalty=length_penalty,
                          early_stopping=early_stopping, output_scores=beam, return_dict_in_generate=True)
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc,
                         stopping_criteria=StoppingCriteriaList([TextClosed()] if stop_at_answer else []))
    texts = tok.batch_decode(out.sequences[:, len(prompt):], skip_special_tokens=True)
    return texts, (out.sequences_scores.tolist() if beam else None)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_decode_logits_equal_the_models_forward_pass(num_beams):
    """Each decode step's logits, for every beam of a batch of prompts of different lengths, equal
    the model's own forward pass over that prompt and the beam's tokens so far (an unsharpened
    random model in fp32, so that a wrong position or a stray cache entry shows in the logits even
    where it would not flip a token)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(1)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger attention logits than the default init's, so positions matter
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(20)
            layer.self_attn.k_proj.weight.mul_(20)
    rng = np.random.default_rng(3)
    prompts = [tok(format_prompt([" ".join(x.title() for x in rng.choice(WORDS, size=2)) for _ in range(n)], "movie"))
               ["input_ids"] for n in (1, 4, 2)]
    decoder = Decoder(model, tok, num_beams, MAX_NEW, stop_at_answer=False)
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id)
    for row, p in enumerate(prompts):
        ids[row, :len(p)] = torch.tensor(p)
    lengths = torch.tensor([len(p) for p in prompts])
    with torch.inference_mode():
        decoder._allocate(len(prompts), width)
        decoder._reset()
        decoder.lengths.copy_(lengths)
        decoder.prefix_valid.copy_(torch.arange(width)[None] < lengths[:, None])
        # the prompt template's header and instruction are run once for the batch (issue 21)
        shared = decoder.shared_prefix(ids, lengths)
        assert shared > len(tok(format_prompt(["X"], "movie"))["input_ids"]) // 2
        assert all(p[:shared] == prompts[0][:shared] for p in prompts)
        logits = decoder._prefill(ids, lengths)
        for row, p in enumerate(prompts):
            torch.testing.assert_close(logits[row], model(torch.tensor([p])).logits[0, -1], atol=2e-4, rtol=1e-4)
        decoder._select(logits[:, None].expand(len(prompts), num_beams, logits.shape[-1]))
        for step in range(1, 5):
            logits = decoder._decode()
            for row, p in enumerate(prompts):
                for beam in range(num_beams):
                    seq = p + decoder.run_seqs[row, beam, :step].tolist()
                    ref = model(torch.tensor([seq])).logits[0, -1]
                    torch.testing.assert_close(logits[row, beam], ref, atol=2e-4, rtol=1e-4,
                                               msg=lambda m: f"step {step}, prompt {row}, beam {beam}: {m}")
            decoder._select(logits)


@pytest.mark.parametrize("num_beams,length_penalty,early_stopping,stop_at_answer", [
    (4, 1.0, False, True),
    (4, 0.0, True, False),
    (3, 2.0, "never", True),
    (2, -1.0, False, True),
    (1, 1.0, False, True),
])
def test_same_beams_as_hf_generate(setup, num_beams, length_penalty, early_stopping, stop_at_answer):
    model, tok, prompts = setup
    decoder = Decoder(model, tok, num_beams, MAX_NEW, length_penalty, early_stopping, stop_at_answer=stop_at_answer)
    ours = decoder.run(prompts)  # one batch: prompts of different lengths share it
    lengths = []
    for i, prompt in enumerate(prompts):
        texts, scores = hf_beams(model, tok, prompt, num_beams, length_penalty, early_stopping, stop_at_answer)
        mine = tok.batch_decode(ours.tokens[i], skip_special_tokens=True)
        assert mine == texts, f"prompt {i}"
        if scores is not None:
            np.testing.assert_allclose(ours.scores[i], scores, rtol=1e-3, atol=1e-4)  # sharpened logits amplify fp32 rounding
        lengths += [len(t) for t in ours.tokens[i]]
    if length_penalty <= 1.0:  # some beams stopped early, so the stopping rules were exercised
        assert min(lengths) < MAX_NEW
    # batching does not change the result
    again = decoder.run(prompts[3:5])
    assert again.tokens == ours.tokens[3:5]


def test_lora_is_merged_for_generation_and_absent_for_grounding(setup):
    from peft import LoraConfig, get_peft_model

    model, tok, prompts = setup
    base_w = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False)).eval()
    try:
        texts, _ = hf_beams(peft_model, tok, prompts[0], 3, 1.0, False, True)
        ours = Decoder(peft_model, tok, 3, MAX_NEW).run(prompts[:1])
        assert tok.batch_decode(ours.tokens[0], skip_special_tokens=True) == texts
        # the model itself is untouched (grounding disables the adapter and sees the base weights)
        assert torch.equal(peft_model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, base_w)
        with peft_model.disable_adapter():
            plain = Decoder(peft_model, tok, 3, MAX_NEW).run(prompts[:1])
        assert plain.tokens != ours.tokens
    finally:
        peft_model.unload()


def test_generate_texts_engines_agree(setup):
    from dllm2rec.teacher.generate import generate_texts

    model, tok, prompts = setup
    gen = {"num_beams": 3, "max_new_tokens": MAX_NEW, "batch_size": 4, "batch_tokens": 400}
    ours = generate_texts(model, tok, prompts, gen, progress=False)
    hf = generate_texts(model, tok, prompts, {**gen, "engine": "hf"}, progress=False)
    assert ours == hf
    assert any(clean_generation(t) for t in ours)
    with pytest.raises(UserError, match="engine must be"):
        generate_texts(model, tok, prompts, {**gen, "engine": "vllm"})


def test_answer_closed_matches_clean_generation():
    assert not answer_closed("  ")
    assert not answer_closed(' "Toy Story')
    assert not answer_closed(' "Toy Story" and')  # a quote does not close it (inch marks)
    assert answer_closed(' "Toy Story" and\n')
    assert answer_closed('"Toy Story\n')
    assert not answer_closed("Toy Story")
    assert answer_closed("Toy Story\nmore")
    # once closed, more text does not change the answer
    for text in ('"Heat" (1995)\n"Casino"', '"Heat\nCasino"', "Heat\n\"Casino\"", '"Doug 18" Doll"\nmore'):
        prefix = next(text[:i] for i in range(len(text) + 1) if answer_closed(text[:i]))
        assert clean_generation(prefix) == clean_generation(text)


def test_answer_table_follows_the_decoded_text(setup):
    from dllm2rec.teacher.beam import CLOSED, NOT_STARTED, AnswerStop

    _, tok, _ = setup
    table = answer_table(tok, len(tok))
    texts = tok.batch_decode([[i] for i in range(len(tok))])
    # tokens with quotes, line breaks, spaces and a few plain ones, plus EOS
    pool = [i for i, t in enumerate(texts) if '"' in t or "\n" in t or not t.strip()] + list(range(200, 230))
    rng = np.random.default_rng(1)
    seqs = torch.tensor(rng.choice(pool, size=(300, 8)))
    n_closed = 0
    for seq in seqs:
        state = NOT_STARTED
        for j, t in enumerate(seq.tolist()):
            state = int(table[state, t])
            closed = answer_closed(tok.decode(seq[:j + 1], skip_special_tokens=True))
            assert (state == CLOSED) == closed, tok.decode(seq[:j + 1])
            n_closed += closed
    assert n_closed > 100
    stop = AnswerStop(table, prompt_len=2)
    got = stop(seqs, None)
    want = [answer_closed(tok.decode(s[2:], skip_special_tokens=True)) for s in seqs]
    assert got.tolist() == want


def test_token_batches_respect_budget_and_count():
    lengths = [50, 200, 120, 200, 10, 90]
    batches = token_batches(lengths, num_beams=4, max_new_tokens=10, batch_tokens=600, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * (max(lengths[i] for i in b) + 40) <= 600
    assert batches[0] == [1, 3]  # 2 x (200 + 40) = 480; a third prompt would need 720
    assert token_batches([1000], 4, 10, 600, 3) == [[0]]  # over budget alone: still generated


@pytest.mark.parametrize("num_beams,early_stopping", [(4, False), (4, True), (3, "never"), (1, False)])
def test_decode_step_reads_nothing_back_from_the_device(num_beams, early_stopping):
    """The decode step that a GPU captures as a CUDA graph (the forward pass over the shared prompt
    cache and the beam bookkeeping) runs on the meta device, which has shapes but no values: an
    operation that reads a value back (``.item()``, ``bool()``, ``nonzero``, a boolean mask) would
    fail there, as it would break the graph's capture on a GPU. Two steps, so the second reads the
    first one's reordered beams and suffix cache."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).eval()
    decoder = Decoder(model, tok, num_beams, MAX_NEW, early_stopping=early_stopping)
    assert decoder.device.type == "meta" and not decoder.cuda_graph
    decoder._allocate(3, 64)
    decoder._reset()
    with torch.inference_mode():
        decoder._step()
        decoder._step()
    assert decoder.fin_seqs.shape == (3, num_beams, MAX_NEW) and decoder.done.is_meta


def test_the_cuda_graph_warm_up_runs_and_leaves_no_trace(setup):
    """The steps a GPU runs before capturing its graph (:meth:`Decoder._warm_up`, the same code on
    a CPU) run without error on freshly reset buffers, and a search after them (which resets the
    buffers, as ``run`` does after a capture) gives the same beams as a decoder that never
    warmed up."""
    model, tok, prompts = setup
    fresh = Decoder(model, tok, 3, MAX_NEW).run(prompts[:2])
    decoder = Decoder(model, tok, 3, MAX_NEW)
    width = max(len(p) for p in prompts[:2])
    decoder._allocate(2, width)
    decoder._reset()
    with torch.inference_mode():
        decoder._warm_up()
    assert int(decoder.t) == 1
    again = decoder.run(prompts[:2])
    assert again.tokens == fresh.tokens and again.scores == fresh.scores


def test_a_failed_cuda_graph_capture_falls_back_to_the_eager_path(setup, monkeypatch, capsys):
    """A decoder told to use CUDA graphs whose capture fails (forced here on the CPU, as a driver
    or an out-of-memory error would on a GPU) runs eagerly, with one log line naming the failure,
    and returns the same beams as the eager decoder; later batches (other shapes) neither retry
    the capture nor log again."""
    model, tok, prompts = setup
    eager = Decoder(model, tok, 3, MAX_NEW, cuda_graph=False)
    want = [eager.run(prompts), eager.run(prompts[3:5])]
    calls = []

    def broken_capture(self):
        calls.append(1)
        raise RuntimeError("CUDA error: out of memory\nmore detail")

    monkeypatch.setattr(Decoder, "_capture", broken_capture)
    decoder = Decoder(model, tok, 3, MAX_NEW, cuda_graph=True)
    capsys.readouterr()
    got = [decoder.run(prompts), decoder.run(prompts[3:5])]
    assert [g.tokens for g in got] == [w.tokens for w in want]
    assert [g.scores for g in got] == [w.scores for w in want]
    assert calls == [1] and not decoder.cuda_graph
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["teacher decode step: CUDA-graph capture failed (RuntimeError: CUDA error: out of memory); "
                     "using the eager path"]
