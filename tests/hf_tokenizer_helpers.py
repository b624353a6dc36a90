"""Tiny Hugging Face model directories of each tokenizer family, built here with `tokenizers` (no download).

Each copies the published layout of its family (pre-tokenizer, normalizer, decoder,
post-processor, where the special tokens sit and which file names them) on a small
vocabulary trained on the test corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from fragment_llm.data.hf_tokenizer_check import LLAMA3_PATTERN, QWEN2_PATTERN
from tests.conftest import corpus_text

FAMILIES = ("gpt2", "llama3", "qwen3", "llama2", "llama2_metaspace")
# Text the vocabularies are trained on: prose, numbers, code, several scripts.
TRAINING_TEXT = [
    corpus_text(60_000),
    " ".join(f"{n * 7919 % 100_003}.{n % 97} x{n}" for n in range(1500)),
    "def f(x):\n    return {'a': [1, 2]}  # it's\n\n\t\tif x != y:\r\n" * 100,
    " 東京の天気 🎉🎉 Ελληνικά — naïve café ١٢٣٤ I'LL WE'VE " * 50,
]


def _write(directory: Path, files: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def _byte_level_bpe(vocab_size: int, ignore_merges: bool = False) -> tuple[Tokenizer, trainers.BpeTrainer]:
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )  # no special tokens: they come after the vocabulary, as in the published files
    return tok, trainer


def gpt2_dir(directory: Path, vocab_size: int = 600) -> Path:
    """GPT-2 / SmolLM2: ByteLevel's built-in split, <|endoftext|> last; only config.json names it (by id)."""
    tok, trainer = _byte_level_bpe(vocab_size)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    tok.add_special_tokens(["<|endoftext|>"])
    eot = tok.token_to_id("<|endoftext|>")
    config = {"model_type": "gpt2", "bos_token_id": eot, "eos_token_id": eot, "vocab_size": tok.get_vocab_size()}
    return _write(directory, {"tokenizer.json": tok.to_str(), "tokenizer_config.json": {"model_max_length": 1024},
                              "config.json": config})  # fmt: skip


def _every_split(vocab: dict[str, int], merges: list) -> list[list[str]]:
    """Merges as transformers' converter writes them for a tiktoken vocabulary (Llama 3's file): in the
    order of the tokens they make, every split of each token into two tokens of the vocabulary."""
    made = sorted({vocab["".join(m if isinstance(m, list) else m.split(" "))] for m in merges})
    by_id = {i: t for t, i in vocab.items()}
    out = []
    for token in (by_id[i] for i in made):
        splits = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in vocab and token[k:] in vocab]
        out += [list(s) for s in sorted(splits, key=lambda s: (vocab[s[0]], vocab[s[1]]))]
    return out


def llama3_dir(directory: Path, vocab_size: int = 600, filler: int = 0) -> Path:
    """Llama 3: Split(cl100k pattern) + ByteLevel, ignore_merges, merges as converted from tiktoken, 256
    special tokens last, BOS added by the post-processor. `filler` unreachable tokens before the special
    ones make the vocabulary that much larger."""
    tok, trainer = _byte_level_bpe(vocab_size, ignore_merges=True)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    spec["model"]["merges"] = _every_split(vocab, spec["model"]["merges"])
    vocab.update({f"<filler_{i}>": len(vocab) + i for i in range(filler)})
    tok = Tokenizer.from_str(json.dumps(spec))
    specials = ["<|begin_of_text|>", "<|end_of_text|>"] + [f"<|reserved_special_token_{i}|>" for i in range(254)]
    tok.add_special_tokens(specials)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                special_tokens=[("<|begin_of_text|>", bos)],
            ),
        ]
    )
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "model_max_length": 131072,
              "tokenizer_class": "PreTrainedTokenizerFast"}  # fmt: skip
    model = {"model_type": "llama", "bos_token_id": bos, "eos_token_id": bos + 1}
    return _write(directory, {"tokenizer.json": tok.to_str(), "tokenizer_config.json": config, "config.json": model})


def qwen3_dir(directory: Path, vocab_size: int = 600) -> Path:
    """Qwen2/2.5/3: NFC, Split(single-digit pattern) + ByteLevel, special tokens and plain added tokens
    (<think>, matched in text by `tokenizers`) last; eos <|im_end|>, pad <|endoftext|>, no BOS."""
    tok, trainer = _byte_level_bpe(vocab_size)
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in ("<think>", "</think>")])
    config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
              "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072}  # fmt: skip
    return _write(directory, {"tokenizer.json": tok.to_str(), "tokenizer_config.json": config})


def llama2_dir(directory: Path, vocab_size: int = 600, metaspace: bool = False) -> Path:
    """Llama 2 / TinyLlama (SentencePiece BPE converted by transformers): "▁" for spaces, byte fallback
    (newline is <0x0A>), <unk> <s> </s> first, BOS added by the post-processor. `metaspace=False`: the
    "legacy" conversion (Prepend + Replace normalizers); True: a Metaspace pre-tokenizer (prepend first),
    with the special tokens named in special_tokens_map.json as AddedToken objects."""
    learner = Tokenizer(models.BPE())
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    flat = [t.replace("\n", " ").replace("\r", " ") for t in TRAINING_TEXT]  # SentencePiece keeps no "\n" piece
    learner.train_from_iterator(flat, trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False))
    learned = json.loads(learner.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for token, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)]
    )
    named = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    files: dict[str, object] = {"tokenizer.json": tok.to_str()}
    if metaspace:
        added = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
        files["tokenizer_config.json"] = {"add_bos_token": True, "legacy": False, "tokenizer_class": "LlamaTokenizer"}
        files["special_tokens_map.json"] = {k: {"content": v, **added} for k, v in named.items()}
    else:
        files["tokenizer_config.json"] = {**named, "add_bos_token": True, "legacy": True, "pad_token": None,
                                          "tokenizer_class": "LlamaTokenizer"}  # fmt: skip
    return _write(directory, files)


def family_dir(family: str, directory: Path) -> Path:
    if family == "llama2_metaspace":
        return llama2_dir(directory, metaspace=True)
    return {"gpt2": gpt2_dir, "llama3": llama3_dir, "qwen3": qwen3_dir, "llama2": llama2_dir}[family](directory)
