"""The embedded model's vocabulary.json (shipped, and equal to what the world writes) and the prompt checks."""
from __future__ import annotations

import json
import shutil

import pytest

from studio.paths import EMBEDDED_MODEL
from studio.vocabulary import (MAX_TOKENS, VOCABULARY_FILE, Vocabulary, check_prompt, count_tokens, estimate_tokens,
                               prompt_token_warning, relation_words)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    v = Vocabulary.load(EMBEDDED_MODEL)
    assert v is not None, f"{EMBEDDED_MODEL / VOCABULARY_FILE} must ship with the embedded model"
    return v


def test_shipped_file_equals_what_the_world_writes_now():
    from training.vocabulary_json import vocabulary_text
    from world import World

    shipped = (EMBEDDED_MODEL / VOCABULARY_FILE).read_text(encoding="utf-8")
    assert shipped == vocabulary_text(World.load()), (
        "vocabulary.json is out of date: python -m training.vocabulary_json --out assets/models/primitives-v4")


def test_file_round_trips_and_agrees_with_the_world(vocab):
    from world import World

    world = World.load()
    assert vocab.to_json() == (EMBEDDED_MODEL / VOCABULARY_FILE).read_text(encoding="utf-8")
    assert vocab.words == world.vocabulary() and list(vocab.shapes) == list(world.shapes)
    assert list(vocab.colors) == list(world.colors)
    assert vocab.examples(len(vocab.example_captions)) == vocab.example_captions
    assert vocab.example("cube", "red") == world.canonical_caption("cube", "red") == "a red cube"
    for prompt in ["a ceramic mug", "A Grey Donut, front view", "a red cube on top of a blue sphere"]:
        assert vocab.unknown_words(prompt) == world.unknown_words(prompt)
    assert vocab.describe() == world.describe()


@pytest.mark.parametrize("prompt", ["a red cube", "a red cube, front view", "A Grey Donut", "a render of a black hut",
                                    "a box that is pink", "a green cone on a white background"])
def test_known_prompts_have_no_warnings(vocab, prompt):
    assert vocab.prompt_warnings(prompt) == []
    assert check_prompt(prompt) == []


def test_unknown_words_are_named_with_what_it_knows(vocab):
    (line,) = vocab.prompt_warnings("a ceramic mug")
    assert "'ceramic', 'mug'" in line and "torus" in line and "purple" in line and '"a red cube"' in line
    (line,) = vocab.prompt_warnings("a shiny blue ball")
    assert "'shiny'" in line and '"a blue sphere"' in line  # the example follows the prompt's shape and colour


def test_a_scene_gets_objects_colours_and_relations_warnings(vocab):
    prompt = "a red cube on top of a blue sphere"
    assert vocab.shapes_named(prompt) == ["cube", "sphere"] and vocab.colors_named(prompt) == ["red", "blue"]
    lines = vocab.prompt_warnings(prompt)
    assert any("2 objects (cube, sphere)" in line for line in lines)
    assert any("2 colours (red, blue)" in line for line in lines)
    assert any("'on top of'" in line and "one object" in line for line in lines)
    assert any("'top'" in line for line in lines)  # and 'top' is a word it never saw
    assert any("several objects" in line for line in vocab.prompt_warnings("two red cubes"))


@pytest.mark.parametrize("prompt, found", [
    ("a cube next to a ball", ["next to"]), ("a cone left of a house, behind a torus", ["left", "behind"]),
    ("a cube in front of a sphere", ["in front of"]), ("a cube under a ball", ["under"]),
    ("a red cube on a white background", []), ("a red cube, front view", []), ("a cube on a cone", ["on"]),
])
def test_relation_words(prompt, found):
    assert relation_words(prompt) == found


def test_synonyms_map_to_canonical_names(vocab):
    from world import World

    world = World.load()
    for shape, words in world.shapes.items():
        for word in words:
            assert vocab.shapes_named(f"a red {word}") == [shape]
    for color, words in world.color_synonyms.items():
        for word in words:
            assert vocab.colors_named(f"a {word.upper()} cube") == [color]
    assert vocab.shapes_named("a box, a cube and a ball") == ["cube", "sphere"]  # repeats removed, prompt order


def test_examples_are_spread_deterministic_and_clean(vocab):
    ex = vocab.examples()
    assert len(ex) == 8 and ex == vocab.examples() and len(set(ex)) == 8
    assert {vocab.shapes_named(e)[0] for e in ex} == set(vocab.shapes)
    assert len({vocab.colors_named(e)[0] for e in ex}) == 8
    everything = vocab.examples(1000)
    assert len(everything) == len(set(everything)) == len(vocab.shapes) * len(vocab.colors)
    for e in everything:
        assert vocab.prompt_warnings(e) == [], e


def test_markdown_and_describe(vocab):
    md = vocab.markdown()
    assert "one object per prompt" in md and "cube (box, block)" in md and "gray (grey)" in md
    assert "front view" in md and "overhead" in md
    assert "\n" not in vocab.describe()


def test_token_warning_long_and_short():
    long_prompt = " ".join(["word"] * 100)
    assert estimate_tokens(long_prompt) > MAX_TOKENS
    assert "estimate" in prompt_token_warning(long_prompt)
    assert prompt_token_warning("a red cube, front view") is None
    tok = EMBEDDED_MODEL / "tokenizer"
    assert count_tokens("a red cube, front view", tok) == 8  # <bos> a red cube , front view <eos>
    assert "estimate" not in prompt_token_warning(long_prompt, tokenizer_dir=tok)
    assert prompt_token_warning("a red cube", tokenizer_dir=tok) is None
    assert any("tokens" in line for line in check_prompt(long_prompt, "some/hub-id"))


def test_estimate_errs_high_for_english():
    """The embedded tokenizer has one token per world word, so the estimate is at least the exact count there."""
    tok = EMBEDDED_MODEL / "tokenizer"
    for prompt in ["a red cube", "a render of a purple cylinder on a white background, overhead view"]:
        assert estimate_tokens(prompt) >= count_tokens(prompt, tok)


def test_folder_without_vocabulary_gives_none(tmp_path):
    assert Vocabulary.load(tmp_path) is None
    shutil.copytree(EMBEDDED_MODEL / "tokenizer", tmp_path / "tokenizer")  # a user's folder: tokenizer, no vocabulary
    assert check_prompt("a ceramic mug", tmp_path) == []
    (tmp_path / VOCABULARY_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="vocabulary"):
        Vocabulary.load(tmp_path)


def test_embedded_prompt_warning():
    from studio.models import embedded_prompt_warning

    assert embedded_prompt_warning("a red cube, front view") is None
    msg = embedded_prompt_warning("a red cube on top of a blue sphere")
    assert all(line.startswith("WARNING: ") for line in msg.splitlines()) and len(msg.splitlines()) == 4
    assert "--model" in msg
    assert "tokens" in embedded_prompt_warning(" ".join(["a red cube"] * 30))
