"""A tiny random LLaMA with a locally trained BPE tokenizer: the teacher's base model in tests.

``make_tiny_llama(path)`` writes a folder that AutoModelForCausalLM / AutoTokenizer load with no
network. The tokenizer is byte-level BPE (any text encodes, decoding round-trips) trained on
movie-title-like text and the BIGRec prompt, so prompts are a realistic number of tokens.
"""
from __future__ import annotations

from pathlib import Path

WORDS = (  # noqa: SIM905 (a readable word list)
    "star wars toy story fargo heat casino babe jumanji sabrina tom and huck sudden death goldeneye "
    "american president dracula dead and loving it balto nixon cutthroat island four rooms money "
    "train get shorty copycat assassins powder leaving las vegas othello now and then persuasion "
    "city of lost children shanghai triad dangerous minds twelve monkeys wings of courage the return "
    "of the jedi empire strikes back raiders of the lost ark godfather part ii pulp fiction usual "
    "suspects shawshank redemption silence of the lambs schindler's list forrest gump lion king "
    "aladdin beauty and the beast men in black independence day mission impossible game toy movie"
).split()


def corpus() -> list[str]:
    from dllm2rec.teacher.prompts import format_prompt, format_response

    titles = [f"{WORDS[i].title()} {WORDS[(i * 7 + 3) % len(WORDS)].title()} ({1950 + i % 50})" for i in range(len(WORDS))]
    texts = list(titles)
    for noun in ("movie", "game", "toy"):
        for i in range(0, len(titles) - 10, 5):
            texts.append(format_prompt(titles[i:i + 10], noun, "train") + format_response(titles[i + 10]))
    return texts


def make_tokenizer(vocab_size: int = 600):
    """A byte-level BPE PreTrainedTokenizerFast with <s>, </s>, <pad>, <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", padding_side="left")


def make_tiny_llama(path, hidden: int = 32, layers: int = 2, seed: int = 0) -> str:
    """Save a tiny random LlamaForCausalLM + tokenizer in ``path``; return the folder as str."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


if __name__ == "__main__":
    import sys
    print(make_tiny_llama(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama"))
