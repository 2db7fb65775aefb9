"""The code-written CLIP tokenizer loads offline in transformers and tokenizes anything without unknowns."""
from __future__ import annotations

import unicodedata

import pytest
from transformers import CLIPTokenizer

from distillation.tokenizer import BOS, EOS, TokenizerWordError, build_vocab, write_clip_tokenizer

WORDS = ["red", "green", "blue", "re", "redder", "tree", "street", "front", "view", "cube", "cylinder",
         "overhead", "café", "Torus"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> CLIPTokenizer:
    folder = tmp_path_factory.mktemp("tok")
    write_clip_tokenizer(folder, WORDS)
    return CLIPTokenizer.from_pretrained(folder)  # no model_max_length: it comes from the files


def test_files_and_special_tokens(tok, tmp_path):
    write_clip_tokenizer(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"} <= names
    base = CLIPTokenizer.from_pretrained(tmp_path)
    assert len(base) == 514
    assert tok.model_max_length == 77
    assert tok.bos_token == BOS and tok.eos_token == EOS and tok.pad_token == EOS
    # <|endoftext|> has the largest id (CLIP's argmax pooling relies on it)
    assert tok.eos_token_id == len(tok) - 1 and tok.bos_token_id == len(tok) - 2


def test_free_form_prompt_round_trips_without_unknowns(tok):
    prompt = 'A red cube, front-view!! (3D) — ünïcödé 日本語 "quoted" it\'s 🙂 50% off; x=y*2'
    ids = tok(prompt).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids[1:-1]  # unk is <|endoftext|>: it may only end the sequence
    text = tok.decode(ids, skip_special_tokens=True)
    expected = unicodedata.normalize("NFC", prompt).lower()
    assert text.replace(" ", "") == expected.replace(" ", "")


def test_each_listed_word_is_one_token(tok):
    for word in WORDS:
        tokens = tok.tokenize(word)
        assert len(tokens) == 1, (word, tokens)
        assert tok.convert_tokens_to_ids(tokens[0]) not in (tok.unk_token_id, None)
    # inside a sentence too, and an unlisted word is split into pieces
    pieces = tok.tokenize("A red tree in the street, overhead view")
    assert "red</w>" in pieces and "tree</w>" in pieces and "street</w>" in pieces and "overhead</w>" in pieces
    assert len(tok.tokenize("purple")) > 1


def test_pad_and_truncate_to_77(tok):
    long = " ".join(["red cube"] * 60)
    batch = tok(["red", long], padding="max_length", truncation=True, max_length=tok.model_max_length,
                return_tensors="pt")
    ids = batch.input_ids
    assert tuple(ids.shape) == (2, 77)
    assert ids[0, :3].tolist() == [tok.bos_token_id, tok.convert_tokens_to_ids("red</w>"), tok.eos_token_id]
    assert (ids[0, 3:] == tok.pad_token_id).all()
    assert ids[1, -1].item() == tok.eos_token_id and ids[1, 0].item() == tok.bos_token_id
    assert tok.pad_token_id not in ids[1, 1:-1].tolist()


def test_deterministic_and_word_order_independent_of_base(tmp_path):
    write_clip_tokenizer(tmp_path / "a", WORDS)
    write_clip_tokenizer(tmp_path / "b", WORDS)
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    vocab_small, _ = build_vocab([])
    vocab_big, _ = build_vocab(WORDS)
    assert all(vocab_big[t] == i for t, i in vocab_small.items() if t not in (BOS, EOS))


@pytest.mark.parametrize("word", ["t-shirt", "3d", "two words", ""])
def test_word_that_cannot_be_one_token_is_rejected(word, tmp_path):
    with pytest.raises(TokenizerWordError, match="letters"):
        write_clip_tokenizer(tmp_path, [word])
