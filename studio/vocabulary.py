"""What a model folder's captions contain (its `vocabulary.json`), and prompt checks for the CLI and the web UI.

Torch-free and world-free: the embedded model's tooling (`training/vocabulary_json.py`, called by
`training.export`) writes `vocabulary.json` from the procedural world (world/) when it exports the
model; the runtime only reads the file. A folder without it (e.g. a user's Stable Diffusion folder) has no
vocabulary: `Vocabulary.load` returns None and only the token-length check applies (`prompt_token_warning`,
for any model).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

VOCABULARY_FILE = "vocabulary.json"
"""File name of the vocabulary inside a model folder."""
FORMAT = 1
"""The `format` number of vocabulary.json that this module reads and the tooling writes."""
MAX_TOKENS = 77
"""CLIP's text encoder reads at most 77 tokens, the start and end tokens included (SD 1.x / 2.x, the embedded model)."""

_WORD = re.compile(r"[a-z]+")
COUNT_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "several", "many",
               "multiple", "pair", "couple", "group")
"""Words that ask for more than one object."""
RELATIONS = ("on top of", "in front of", "next to", "left", "right", "beside", "behind", "under", "underneath",
             "beneath", "below", "above", "over", "atop", "between", "inside", "around", "near", "against", "on")
"""Phrases that place one object relative to another, longest first ('on top of' hides its 'on')."""
_NOT_A_RELATION = {"on": r"(?!\s+(?:a\s+)?white\s+background\b)"}
"""Uses of a relation word that are not relations: the captions' own 'on a white background'."""


@dataclass
class Vocabulary:
    """The words of a model's training captions, as its folder's vocabulary.json lists them."""

    shapes: dict[str, list[str]]
    """Canonical shape name -> the words that name it (the first is the canonical word), in catalogue order."""
    colors: dict[str, list[str]]
    """Canonical colour name -> the words that name it (the first is the canonical word)."""
    views: list[str]
    """View words of the captions' suffix (front, side, back, overhead); the studio appends them per camera."""
    view_template: str
    """How a view is written after a caption, with {prompt} and {view} fields: '{prompt}, {view} view'."""
    canonical_template: str
    """The canonical caption with {color} and {shape} fields ('a {color} {shape}'): demos and examples."""
    templates: list[str]
    """The training caption templates, with {color} and {shape} fields."""
    example_captions: list[str]
    """The example captions the file lists (equal to `examples(len(example_captions))`)."""
    words: list[str]
    """Every word the captions can contain (lower case, sorted), view words and 'view' included."""

    @classmethod
    def load(cls, model_dir: str | Path) -> "Vocabulary | None":
        """The vocabulary of a model folder; None when it has no vocabulary.json (ValueError if it is malformed)."""
        path = Path(model_dir) / VOCABULARY_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path} is not a valid vocabulary file: {e}") from e

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        """Build from vocabulary.json's content (a dict whose `format` is FORMAT)."""
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        return cls(
            shapes={k: list(v) for k, v in data["shapes"].items()},
            colors={k: list(v) for k, v in data["colors"].items()},
            views=list(data["views"]),
            view_template=str(data["view_template"]),
            canonical_template=str(data["canonical_template"]),
            templates=list(data["templates"]),
            example_captions=list(data["examples"]),
            words=list(data["words"]),
        )

    def to_dict(self) -> dict:
        """vocabulary.json's content (the inverse of from_dict)."""
        return {
            "format": FORMAT,
            "shapes": self.shapes,
            "colors": self.colors,
            "views": self.views,
            "view_template": self.view_template,
            "canonical_template": self.canonical_template,
            "templates": self.templates,
            "examples": self.example_captions,
            "words": self.words,
        }

    def to_json(self) -> str:
        """vocabulary.json's text: JSON, indent 2, trailing newline."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` that no caption contains (lower case, in prompt order, no repeats), as World's."""
        known = set(self.words)
        return _unique(w for w in _words(prompt) if w not in known)

    def shapes_named(self, prompt: str) -> list[str]:
        """Canonical names of the shapes `prompt` names (synonyms mapped), in prompt order, no repeats."""
        return _named(prompt, self.shapes)

    def colors_named(self, prompt: str) -> list[str]:
        """Canonical names of the colours `prompt` names (synonyms mapped), in prompt order, no repeats."""
        return _named(prompt, self.colors)

    def describe(self) -> str:
        """One line naming the shapes and colours, e.g. for a warning."""
        return f"shapes: {', '.join(self.shapes)}; colours: {', '.join(self.colors)}"

    def example(self, shape: str, color: str) -> str:
        """The canonical caption of a `color` `shape` (canonical names), e.g. 'a red cube'."""
        return self.canonical_template.format(color=self.colors[color][0], shape=self.shapes[shape][0])

    def examples(self, n: int = 8) -> list[str]:
        """`n` canonical captions (distinct, at most one per shape and colour pair) spread over shapes and colours."""
        return [self.example(s, c) for s, c in spread_pairs(list(self.shapes), list(self.colors), n)]

    def markdown(self) -> str:
        """A short Markdown block for a web page: what the model draws, its shapes, colours and view words."""
        views = ", ".join(f"`{self.view_template.format(prompt='…', view=v)}`" for v in self.views)
        named = {w for table in (self.shapes, self.colors) for ws in table.values() for w in ws}
        other = [w for w in self.words if w not in named and w not in self.views and w != "view"]
        return "\n".join([
            f"This model draws **one object per prompt**: one of {len(self.shapes)} shapes in one of "
            f"{len(self.colors)} colours, on a white background. Several objects, relations between them "
            "(\"on top of\", \"next to\", ...), materials and scenes are outside what it learned.",
            "",
            f"- **Shapes:** {_with_synonyms(self.shapes)}",
            f"- **Colours:** {_with_synonyms(self.colors)}",
            f"- **Views:** {views}; the studio adds them per camera, so leave them out of the prompt",
            f"- **Other caption words:** {', '.join(other)}",
            f"- **Examples:** {', '.join(f'`{e}`' for e in self.examples(4))}",
        ])

    def prompt_warnings(self, prompt: str) -> list[str]:
        """One readable line per problem the model has with `prompt` (unknown words, several objects, several
        colours, relations), in that order; empty when the prompt is fine."""
        checks = (self._unknown_warning, self._objects_warning, self._colors_warning, self._relations_warning)
        return [line for line in (check(prompt) for check in checks) if line]

    def _unknown_warning(self, prompt: str) -> str | None:
        """The unknown words, with what the model knows and an example close to the prompt."""
        unknown = self.unknown_words(prompt)
        if not unknown:
            return None
        return (f"The embedded model does not know {', '.join(repr(w) for w in unknown)}; it knows "
                f"{self.describe()} (e.g. \"{self._example_for(prompt)}\").")

    def _objects_warning(self, prompt: str) -> str | None:
        """Several shapes named, a plural shape word ('cubes') or a count word ('two')."""
        shapes = self.shapes_named(prompt)
        several = _unique(w for w in _words(prompt) if w in COUNT_WORDS or self._plural_shape(w))
        if len(shapes) > 1:
            what = f"{len(shapes)} objects ({', '.join(shapes)})"
        elif several:
            what = f"several objects ({', '.join(repr(w) for w in several)})"
        else:
            return None
        return (f"The prompt names {what}; the embedded model draws one object per prompt, so it blends them or "
                "draws one of them: name one shape.")

    def _colors_warning(self, prompt: str) -> str | None:
        """Several colours named."""
        colors = self.colors_named(prompt)
        if len(colors) < 2:
            return None
        return (f"The prompt names {len(colors)} colours ({', '.join(colors)}); the embedded model paints its one "
                "object in one colour: name one colour.")

    def _relations_warning(self, prompt: str) -> str | None:
        """Words that place objects relative to each other."""
        found = relation_words(prompt)
        if not found:
            return None
        return (f"The embedded model draws one object and ignores relations ({', '.join(repr(p) for p in found)}): "
                "describe a single object.")

    def _example_for(self, prompt: str) -> str:
        """The canonical caption of the first shape and colour the prompt names (else the first ones)."""
        shape = next(iter(self.shapes_named(prompt)), next(iter(self.shapes)))
        color = next(iter(self.colors_named(prompt)), next(iter(self.colors)))
        return self.example(shape, color)

    def _plural_shape(self, word: str) -> bool:
        """Whether `word` is the plural of a shape word ('cubes', 'boxes') and not itself a caption word."""
        if word in self.words:
            return False
        shape_words = {w for ws in self.shapes.values() for w in ws}
        return any(word.endswith(end) and word[: -len(end)] in shape_words for end in ("s", "es"))


def embedded() -> Vocabulary | None:
    """The embedded model's vocabulary (studio.paths.EMBEDDED_MODEL), read again only when the file changes."""
    from . import paths

    path = paths.EMBEDDED_MODEL / VOCABULARY_FILE
    return _load_cached(str(paths.EMBEDDED_MODEL), path.stat().st_mtime_ns if path.is_file() else -1)


def spread_pairs(shapes: list[str], colors: list[str], n: int) -> list[tuple[str, str]]:
    """`n` distinct (shape, colour) pairs (at most all of them) walking both lists at once, so that consecutive
    pairs differ in shape and in colour: (s0, c0), (s1, c1), ...; deterministic."""
    if not shapes or not colors:
        return []
    period = math.lcm(len(shapes), len(colors))
    pairs = [(shapes[i % len(shapes)], colors[(i + i // period) % len(colors)])
             for i in range(len(shapes) * len(colors))]
    return pairs[: max(n, 0)]


def relation_words(prompt: str) -> list[str]:
    """The RELATIONS phrases of `prompt` ('on top of', 'next to', 'left', ...), in prompt order, no repeats; the
    captions' 'on a white background' does not count."""
    text = " ".join(_words(prompt))
    hits: list[tuple[int, str]] = []
    for phrase in RELATIONS:
        pattern = r"\b" + r"\s+".join(phrase.split()) + r"\b" + _NOT_A_RELATION.get(phrase, "")
        hits += [(m.start(), phrase) for m in re.finditer(pattern, text)]
        text = re.sub(pattern, lambda m: " " * len(m.group()), text)  # a longer phrase hides its parts
    return _unique(p for _, p in sorted(hits))


def estimate_tokens(prompt: str) -> int:
    """A cheap, torch-free ESTIMATE of the CLIP token count of `prompt`, start and end tokens included.

    Splits like CLIP's pre-tokenizer (runs of letters, single digits, single other symbols) and counts one token
    per started 6 bytes of a letter run (common words are one token in SD's vocabulary, rare ones split into
    pieces) and one per digit or symbol. It errs on the high side for ordinary English; an exact count needs the
    model's tokenizer (`count_tokens`): a byte-level vocabulary such as the embedded model's spends one token per
    letter on the words it does not know.
    """
    n = 2
    for piece in re.findall(r"[^\W\d_]+|\d|[^\w\s]|_", prompt.lower()):
        n += math.ceil(len(piece.encode("utf-8")) / 6) if piece[0].isalpha() else 1
    return n


def count_tokens(prompt: str, tokenizer_dir: str | Path) -> int | None:
    """The exact token count of `prompt` with a model's CLIP tokenizer folder (start and end tokens included);
    None when the folder has no vocab.json. Imports transformers on first use (~1.5 s, no torch); after that a
    count takes under a millisecond (the tokenizer is cached per folder)."""
    folder = Path(tokenizer_dir)
    if not (folder / "vocab.json").is_file():
        return None
    return len(_tokenizer(str(folder.resolve()))(prompt, verbose=False)["input_ids"])


def prompt_token_warning(prompt: str, max_tokens: int = MAX_TOKENS,
                         tokenizer_dir: str | Path | None = None) -> str | None:
    """A warning when `prompt` is longer than the text encoder reads (`max_tokens`, start and end tokens
    included), else None. Any model: counts exactly with `tokenizer_dir` when it holds a CLIP tokenizer
    (vocab.json), else uses `estimate_tokens` and says it is an estimate."""
    exact = None if tokenizer_dir is None else count_tokens(prompt, tokenizer_dir)
    n = estimate_tokens(prompt) if exact is None else exact
    if n <= max_tokens:
        return None
    size = f"{n} tokens long" if exact is not None else f"about {n} tokens long (an estimate)"
    return (f"The prompt is {size}, but the text encoder reads at most {max_tokens} (start and end tokens "
            "included): the words past the limit are cut off, so put what matters first or shorten it.")


def check_prompt(prompt: str, model_dir: str | Path | None = None) -> list[str]:
    """Every warning for `prompt` with the model in `model_dir` (None or "": the embedded model): its vocabulary's
    `prompt_warnings` when the folder has vocabulary.json, then the token-length warning (exact when the folder
    has tokenizer/vocab.json; a hub id or a folder without one gets the estimate)."""
    from . import paths

    folder = Path(paths.EMBEDDED_MODEL if model_dir in (None, "") else model_dir)
    vocab = Vocabulary.load(folder) if folder.is_dir() else None
    lines = vocab.prompt_warnings(prompt) if vocab else []
    token = prompt_token_warning(prompt, tokenizer_dir=folder / "tokenizer")
    return lines + ([token] if token else [])


@lru_cache(maxsize=4)
def _load_cached(model_dir: str, mtime_ns: int) -> Vocabulary | None:
    """Vocabulary.load, once per folder and file modification time."""
    return Vocabulary.load(model_dir)


@lru_cache(maxsize=8)
def _tokenizer(folder: str):
    """The CLIP tokenizer of a folder, loaded once (transformers imported lazily; it does not import torch)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder)


def _words(prompt: str) -> list[str]:
    """The lower-case letter runs of `prompt`: the unit every vocabulary check works on."""
    return _WORD.findall(prompt.lower())


def _unique(items) -> list:
    """`items` in order, repeats removed."""
    return list(dict.fromkeys(items))


def _named(prompt: str, table: dict[str, list[str]]) -> list[str]:
    """Canonical names of `table` whose words occur in `prompt`, in prompt order, no repeats."""
    word_to_name = {w: name for name, ws in table.items() for w in ws}
    return _unique(word_to_name[w] for w in _words(prompt) if w in word_to_name)


def _with_synonyms(table: dict[str, list[str]]) -> str:
    """'cube (box, block), sphere (ball), cone' from a name -> words table."""
    return ", ".join(ws[0] + (f" ({', '.join(ws[1:])})" if len(ws) > 1 else "") for ws in table.values())
