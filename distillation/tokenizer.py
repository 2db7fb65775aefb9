"""A CLIP tokenizer written by code, so that tiny and embedded models need no downloaded vocabulary.

The base vocabulary is byte-level: every byte's printable stand-in character, with and without the
end-of-word marker `</w>`, plus `<|startoftext|>` and `<|endoftext|>` (514 tokens). Any prompt therefore
tokenizes without unknown tokens, one token per UTF-8 byte. Each word passed in `words` also gets BPE
merges (built left to right) that make it a single token, so a model trained on a small world vocabulary
sees one token per word.

Layout of the ids, as in OpenAI's CLIP: bytes 0..255, bytes + `</w>` 256..511, merged tokens, then
`<|startoftext|>` and `<|endoftext|>` last (so `<|endoftext|>` has the largest id, which CLIP pooling relies on).
"""
from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
MAX_LENGTH = 77


class TokenizerWordError(ValueError):
    """A word that CLIP's pre-tokenizer would split, so it can never become one token."""


def byte_to_char() -> dict[int, str]:
    """The byte-level BPE map from each byte 0..255 to a printable unicode character.

    Bytes whose Latin-1 character is printable ('!'..'~', '¡'..'¬', '®'..'ÿ') map to themselves; the other
    68 bytes map, in increasing byte order, to chr(256), chr(257), ...
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1))
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def normalize_word(word: str) -> str:
    """The form CLIPTokenizer sees (NFC, lower case); TokenizerWordError if the pre-tokenizer would split it."""
    norm = unicodedata.normalize("NFC", word).lower()
    if not norm or not norm.isalpha():
        raise TokenizerWordError(
            f"word {word!r} is not a single run of letters, so CLIP's pre-tokenizer splits it; "
            "pass letters-only words (split 't-shirt' into 't', 'shirt')"
        )
    return norm


def _word_symbols(word: str, table: dict[int, str]) -> list[str]:
    """Initial BPE symbols of a word: one per UTF-8 byte, the last carrying `</w>`."""
    chars = [table[b] for b in word.encode("utf-8")]
    chars[-1] += END_OF_WORD
    return chars


def _apply_bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Merge the lowest-ranked adjacent pair (leftmost on ties) until no ranked pair is left."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), -1), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        pairs = [(r, i) for r, i in pairs if r >= 0]
        if not pairs:
            break
        _, i = min(pairs)
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def build_vocab(words: Iterable[str] = ()) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id) and ordered merges making every word in `words` a single token.

    For each word, the merges so far are applied; while more than one symbol remains, the first two symbols
    are merged by a new (lowest-priority) merge. A new merge can only fire once all earlier merges are
    exhausted, so words handled before stay single tokens.
    """
    table = byte_to_char()
    tokens = [table[b] for b in range(256)] + [table[b] + END_OF_WORD for b in range(256)]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        symbols = _word_symbols(normalize_word(word), table)
        segments = _apply_bpe(symbols, ranks)
        while len(segments) > 1:
            pair = (segments[0], segments[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            segments = _apply_bpe(symbols, ranks)
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, merges


def write_clip_tokenizer(folder: Path, words: Iterable[str] = ()) -> None:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into `folder`.

    `transformers.CLIPTokenizer.from_pretrained(folder)` then loads offline with model_max_length 77.
    Words are lower-cased (CLIP lower-cases prompts); a word that is not a single run of letters raises
    TokenizerWordError. Vocabulary size: 514 + number of merged tokens (see `build_vocab`).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
