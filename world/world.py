"""The world's catalogue: (shape, colour) pairs, their captions and the caption vocabulary."""
from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from studio.sampling import VIEW_SUFFIXES
from world.objects import OBJECTS

CAPTIONS_FILE = Path(__file__).with_name("captions.toml")
CANONICAL_TEMPLATE = "a {color} {shape}"
"""The canonical caption (canonical words): the prompt of benchmarks, demos and vocabulary.json's examples."""


@dataclass
class World:
    """Shapes, colours and caption templates, loaded from captions.toml."""

    colors: dict[str, tuple[float, float, float]]
    """Colour name -> albedo RGB in [0, 1]."""
    shapes: dict[str, list[str]]
    """Canonical shape name -> the words that name it (first = canonical word)."""
    templates: list[str]
    """Caption templates with {color} and {shape} fields."""
    color_synonyms: dict[str, list[str]] = field(default_factory=dict)
    """Colour name -> extra words for the same colour (e.g. gray -> grey)."""

    @classmethod
    def load(cls, path: str | Path = CAPTIONS_FILE) -> "World":
        """Read captions.toml (or another file with the same tables)."""
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        colors = {k: tuple(c / 255.0 for c in v) for k, v in raw["colors"].items()}
        unknown = set(raw["shapes"]) - set(OBJECTS)
        if unknown:
            raise ValueError(f"captions.toml names shapes without an object: {sorted(unknown)}; valid: {list(OBJECTS)}")
        return cls(colors, dict(raw["shapes"]), list(raw["templates"]), dict(raw.get("color_synonyms", {})))

    def pairs(self) -> list[tuple[str, str]]:
        """Every (shape, colour) pair of the world, shapes in catalogue order."""
        return [(s, c) for s in self.shapes for c in self.colors]

    def caption(self, shape: str, color: str, rng: random.Random, view: str | None = None) -> str:
        """A random caption of a `color` `shape` (random template and synonyms), with ', {view} view' if given."""
        shape_word = rng.choice(self.shapes[shape])
        color_word = rng.choice([color, *self.color_synonyms.get(color, [])])
        text = rng.choice(self.templates).format(color=color_word, shape=shape_word)
        return text if view is None else f"{text}, {view} view"

    def canonical_caption(self, shape: str, color: str) -> str:
        """'a {color} {shape}' with the canonical words: the prompt used by benchmarks and demos."""
        return CANONICAL_TEMPLATE.format(color=color, shape=self.shapes[shape][0])

    def vocabulary(self) -> list[str]:
        """All words that captions can contain (lower case, sorted), including view words and 'view'."""
        words: set[str] = set()
        texts = [*self.templates, *self.colors, *VIEW_SUFFIXES, "view"]
        texts += [w for ws in self.shapes.values() for w in ws]
        texts += [w for ws in self.color_synonyms.values() for w in ws]
        for text in texts:
            words.update(re.findall(r"[a-z]+", text.replace("{color}", " ").replace("{shape}", " ").lower()))
        return sorted(words)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` that no caption of this world contains (lower case, in prompt order, no repeats)."""
        known = set(self.vocabulary())
        seen: list[str] = []
        for w in re.findall(r"[a-z]+", prompt.lower()):
            if w not in known and w not in seen:
                seen.append(w)
        return seen

    def describe(self) -> str:
        """One line naming the shapes and colours, e.g. for a warning."""
        return f"shapes: {', '.join(self.shapes)}; colours: {', '.join(self.colors)}"

