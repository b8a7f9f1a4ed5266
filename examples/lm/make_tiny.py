"""A tiny language-model setup, built offline in a few seconds: a two-domain corpus (code and
prose), a word-level tokenizer trained on it, and two small random GPT-2 teachers sharing it.

    python make_tiny.py [ROOT]     # writes ROOT/corpus, ROOT/tok, ROOT/teachers (default: here)

Random teachers teach nothing useful; the point is a run of every stage in seconds. For real
teachers, see benchmarks/lm.py (experts trained per domain)."""
from __future__ import annotations

import random
import sys
from pathlib import Path

WORDS = {
    "code": ["def", "return", "for", "in", "if", "else", "import", "class", "self", "x", "y", "i", "range", "(", ")",
             ":", "=", "+", "print", "len", "list", "None", "True", "False", "while", "0", "1"],
    "prose": ["the", "a", "cat", "dog", "sat", "on", "mat", "and", "ran", "to", "house", "was", "very", "happy",
              "sad", "old", "young", "it", "saw", "bird", "tree", "under", "over", "quickly", ".", ","],
}
SPECIALS = ["[UNK]", "[PAD]", "[EOS]"]


def make_corpus(root: Path, files: int = 8, words: int = 120, seed: int = 0) -> None:
    rng = random.Random(seed)
    for domain, vocab in WORDS.items():
        folder = root / "corpus" / domain
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".py" if domain == "code" else ".txt"
        for i in range(files):
            lines = [" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 10))) for _ in range(words // 7)]
            (folder / f"doc{i}{suffix}").write_text("\n".join(lines) + "\n")


def make_tokenizer(root: Path) -> int:
    """A word-level tokenizer over both domains' words; returns its vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted({w for ws in WORDS.values() for w in ws}))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    fast.save_pretrained(root / "tok")
    return len(vocab)


def make_teachers(root: Path, vocab: int, seed: int = 0) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    for i, name in enumerate(["code", "prose"]):
        torch.manual_seed(seed + i)
        config = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=64, vocab_size=vocab,
                            eos_token_id=SPECIALS.index("[EOS]"), bos_token_id=SPECIALS.index("[EOS]"),
                            pad_token_id=SPECIALS.index("[PAD]"))
        GPT2LMHeadModel(config).save_pretrained(root / "teachers" / name)


def main(root: Path) -> None:
    make_corpus(root)
    vocab = make_tokenizer(root)
    make_teachers(root, vocab)
    print(f"wrote {root / 'corpus'}, {root / 'tok'} ({vocab} tokens) and {root / 'teachers'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
