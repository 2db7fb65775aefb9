"""Write an embedded model folder's vocabulary.json from the procedural world (world/captions.toml).

    python -m training.vocabulary_json --out assets/models/primitives-v4

`training.export` calls `write_vocabulary` for every exported folder; the runtime reads the file with
`studio.vocabulary.Vocabulary.load` and never imports the world. tests/test_vocabulary.py checks that the shipped
file equals `vocabulary_text(World.load())`, so the two cannot drift: after editing captions.toml, rerun this.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from studio.sampling import VIEW_SUFFIXES, view_prompt
from studio.vocabulary import FORMAT, VOCABULARY_FILE, spread_pairs
from world.world import CANONICAL_TEMPLATE, World

EXAMPLES_IN_FILE = 12
"""How many canonical example captions the file lists (two per shape with the six shapes)."""


def vocabulary_data(world: World) -> dict:
    """vocabulary.json's content for `world` (the layout studio.vocabulary.Vocabulary.from_dict reads)."""
    pairs = spread_pairs(list(world.shapes), list(world.colors), EXAMPLES_IN_FILE)
    return {
        "format": FORMAT,
        "shapes": {name: list(words) for name, words in world.shapes.items()},
        "colors": {name: [name, *world.color_synonyms.get(name, [])] for name in world.colors},
        "views": list(VIEW_SUFFIXES),
        "view_template": view_prompt("{prompt}", "{view}"),
        "canonical_template": CANONICAL_TEMPLATE,
        "templates": list(world.templates),
        "examples": [world.canonical_caption(s, c) for s, c in pairs],
        "words": world.vocabulary(),
    }


def vocabulary_text(world: World) -> str:
    """The exact text of vocabulary.json for `world` (JSON, indent 2, trailing newline)."""
    return json.dumps(vocabulary_data(world), indent=2) + "\n"


def write_vocabulary(folder: str | Path, world: World | None = None) -> Path:
    """Write `folder`/vocabulary.json for `world` (default: World.load()); returns its path."""
    path = Path(folder) / VOCABULARY_FILE
    path.write_text(vocabulary_text(world or World.load()), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: write vocabulary.json into a model folder."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="assets/models/primitives-v4", help="the model folder")
    args = ap.parse_args(argv)
    print(write_vocabulary(args.out))


if __name__ == "__main__":
    main()
