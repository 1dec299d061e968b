"""Title-constrained beam search (dllm2rec.teacher.constrained): every beam a catalogue title, the
same beams from our decoder as from transformers ``generate`` with the same mask, and a teacher
list that starts with the beams' items."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_teacher_beam import setup  # noqa: F401 (the sharpened tiny LLaMA and its prompts)
from tiny_llm import WORDS

from dllm2rec.teacher.beam import Decoder
from dllm2rec.teacher.constrained import ROOT, TitleTrie, hf_processor, response_tokens

MAX_NEW = 24


def catalogue(n: int = 30, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    titles = [" ".join(w.title() for w in rng.choice(WORDS, size=rng.integers(1, 4))) for _ in range(n)]
    return titles + [titles[0], ""]  # a duplicate title (two items) and an item without a title


def hf_constrained(model, tok, prompt, trie, num_beams, length_penalty):
    from transformers import GenerationConfig, LogitsProcessorList

    beam = num_beams > 1
    gc = GenerationConfig(num_beams=num_beams, max_new_tokens=MAX_NEW, do_sample=False, num_return_sequences=num_beams,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, length_penalty=length_penalty,
                          output_scores=beam, return_dict_in_generate=True)
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc,
                         logits_processor=LogitsProcessorList([hf_processor(trie, len(prompt))]))
    seqs = [s[len(prompt):].tolist() for s in out.sequences]
    seqs = [s[:s.index(tok.eos_token_id) + 1] if tok.eos_token_id in s else s for s in seqs]
    return seqs, (out.sequences_scores.tolist() if beam else None)


def test_the_mask_allows_exactly_the_tokens_that_continue_a_title(setup):  # noqa: F811
    _, tok, _ = setup
    titles = catalogue()
    trie = TitleTrie(tok, titles, len(tok))
    paths = [response_tokens(tok, t) for t in titles if t]
    for path in paths[:10]:
        node = ROOT
        for j, t in enumerate(path):
            allowed = set(torch.nonzero(trie.mask(torch.tensor(node)) == 0).flatten().tolist())
            want = {p[j] for p in paths if p[:j] == path[:j]}
            assert allowed == want
            node = int(trie.step(torch.tensor(node), torch.tensor(t)))
        assert not (trie.mask(torch.tensor(node)) == 0).any()  # after EOS: nothing
    assert trie.items_of(paths[0]) == [0, len(titles) - 2]  # the duplicated title: both items
    assert trie.items_of(paths[1][:-1]) == []  # a title without its EOS is not a whole response
    assert int(trie.step(torch.tensor(ROOT), torch.tensor(tok.eos_token_id))) == trie.dead
    assert tok.decode(paths[1], skip_special_tokens=True) == f'"{titles[1]}"'


@pytest.mark.parametrize("num_beams,length_penalty", [(4, 1.0), (3, 0.0), (1, 1.0)])
def test_constrained_beams_are_titles_and_equal_hf_generate(setup, num_beams, length_penalty):  # noqa: F811
    model, tok, prompts = setup
    titles = catalogue()
    trie = TitleTrie(tok, titles, len(tok))
    ours = Decoder(model, tok, num_beams, MAX_NEW, length_penalty, trie=trie).run(prompts)
    unconstrained = Decoder(model, tok, num_beams, MAX_NEW, length_penalty).run(prompts)
    n_titles = 0
    for i, prompt in enumerate(prompts):
        seqs, scores = hf_constrained(model, tok, prompt, trie, num_beams, length_penalty)
        mine = [s[:s.index(tok.eos_token_id) + 1] if tok.eos_token_id in s else s for s in ours.tokens[i]]
        assert mine == seqs, f"prompt {i}"
        if scores is not None:
            np.testing.assert_allclose(ours.scores[i], scores, rtol=1e-3, atol=1e-4)
        for s in mine:  # every beam is exactly one catalogue title's response
            assert trie.items_of(s), tok.decode(s)
            n_titles += 1
    assert n_titles == num_beams * len(prompts)
    # the constraint changes what the sharpened random model writes (it does not write titles alone)
    free = [tok.decode(t[0], skip_special_tokens=True) for t in unconstrained.tokens]
    assert sum(f.strip('"\n ') not in set(titles) - {""} for f in free) > 0


def test_constrained_generation_engines_agree_and_give_every_beam(setup):  # noqa: F811
    from dllm2rec.teacher.generate import generate_texts

    model, tok, prompts = setup
    trie = TitleTrie(tok, catalogue(), len(tok))
    gen = {"num_beams": 3, "max_new_tokens": MAX_NEW, "batch_size": 4, "batch_tokens": 2000}
    ours = generate_texts(model, tok, prompts, gen, progress=False, trie=trie, beams=True)
    hf = generate_texts(model, tok, prompts, {**gen, "engine": "hf"}, progress=False, trie=trie, beams=True)
    assert ours == hf and all(len(b) == 3 for b in ours)
    top = generate_texts(model, tok, prompts, gen, progress=False, trie=trie)
    assert top == [tok.decode(b[0], skip_special_tokens=True).strip() for b in ours]


def test_the_teachers_list_starts_with_its_beams_items_then_grounding(setup):  # noqa: F811
    from dllm2rec.teacher.generate import generate_and_ground, generate_texts
    from dllm2rec.teacher.ground import embed_texts, nearest_items
    from dllm2rec.teacher.prompts import encode_example

    model, tok, _ = setup
    titles = catalogue()
    item_emb = torch.from_numpy(embed_texts(model, tok, [t or "?" for t in titles], 16))
    rng = np.random.default_rng(1)
    histories = [list(rng.choice([t for t in titles if t], size=3)) for _ in range(4)]
    params = {"generation": {"num_beams": 3, "max_new_tokens": MAX_NEW, "batch_size": 4, "constrained": True},
              "grounding": {"topn": 10, "batch_size": 16}, "sft": {"cutoff_len": 512}}
    res = generate_and_ground(model, tok, histories, [0, 1, 2, 3], item_emb, params, "movie", progress=False,
                              titles=titles)
    free = generate_and_ground(model, tok, histories, [0, 1, 2, 3], item_emb,
                               {**params, "generation": {**params["generation"], "constrained": False}}, "movie",
                               progress=False)
    trie = TitleTrie(tok, titles, len(tok))
    prompts = [encode_example(tok, h, "movie", 512)[0] for h in histories]
    beams = generate_texts(model, tok, prompts, params["generation"], progress=False, trie=trie, beams=True)
    q = torch.from_numpy(res["embeddings"])
    grounded, grounded_d, _ = nearest_items(q, item_emb, 10)
    for r in range(4):
        head = list(dict.fromkeys(i for b in beams[r] for i in trie.items_of(b)))
        assert res["n_beam_items"][r] == len(head) >= 3  # three titles (the duplicated one lists two items)
        row = res["topk_items"][r].tolist()
        assert row[:len(head)] == head and len(set(row)) == len(row) == 10
        assert row[len(head):] == [i for i in grounded[r].tolist() if i not in head][:10 - len(head)]
        assert res["topk_dist"][r, 0] == pytest.approx(0.0, abs=1e-3)  # the top beam's own title
        assert titles[row[0]] == res["answers"][r]
    assert free["n_beam_items"] is None and not np.array_equal(free["topk_items"], res["topk_items"])


@pytest.mark.parametrize("num_beams", [3, 1])
def test_the_constrained_decode_step_reads_nothing_back_from_the_device(num_beams):
    """As tests/test_teacher_beam.py's meta-device test: the trie's mask and next nodes (two
    searchsorted calls) run on the meta device, so a GPU can still capture the step as a graph."""
    from tiny_llm import make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).eval()
    decoder = Decoder(model, tok, num_beams, 12, trie=TitleTrie(tok, catalogue(), len(tok)))
    decoder._allocate(3, 64)
    decoder._reset()
    with torch.inference_mode():
        decoder._step()
        decoder._step()
    assert decoder.run_node.is_meta and decoder.trie.keys.is_meta
