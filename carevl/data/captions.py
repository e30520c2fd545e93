"""Scene captions in the grid format the tiny caption model is taught, and object-level caption scoring.

A grid caption walks the 4 x 4 layout row by row, each row split into its left and right half:

    Top row, left: empty, red circle; right: empty, blue square. Second row, left: ...

Every cell gets a fixed slot, so the caption model's k-th slot always describes the k-th image patch
(a pattern a small model learns quickly), and the side of each object is spelled out for the text-only
experts that read the caption. `caption_objects` reads any caption back into (colour, shape, side)
objects, from this format or from the sentence format of `carevl.data.synth.describe`, so captions of
either kind are scored the same way (`object_counts`).
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

from carevl.data.shapes import COLORS, GRID, SHAPES, Scene

ROW_NAMES = ("Top row", "Second row", "Third row", "Bottom row")
EMPTY = "empty"
HALF = GRID // 2

Object = tuple[str, str, str]   # (colour, shape, side)

_COLOR = "|".join(COLORS)
_SHAPE = "|".join(SHAPES)
_ROW_RE = re.compile(r"(" + "|".join(ROW_NAMES) + r"), left: ([^;.]*); right: ([^.]*)\.")
_SENTENCE_RE = re.compile(rf"\b(an?|\d+) ({_COLOR}) ({_SHAPE})s? on the (left|right)\b")


def grid_caption(scene: Scene) -> str:
    """The grid caption of a scene (module docstring); `len(ROW_NAMES)` must match the grid."""
    cells = {shape.cell: f"{shape.color} {shape.kind}" for shape in scene.shapes}
    rows = []
    for r, name in enumerate(ROW_NAMES):
        slots = [cells.get(r * GRID + c, EMPTY) for c in range(GRID)]
        rows.append(f"{name}, left: {', '.join(slots[:HALF])}; right: {', '.join(slots[HALF:])}.")
    return " ".join(rows)


def scene_objects(scene: Scene) -> list[Object]:
    return [(s.color, s.kind, s.side) for s in scene.shapes]


def _slot_object(slot: str, side: str) -> Object | None:
    words = slot.split()
    if len(words) == 2 and words[0] in COLORS and words[1] in SHAPES:
        return words[0], words[1], side
    return None


def caption_objects(text: str | None) -> list[Object]:
    """The (colour, shape, side) objects a caption names; text that names none gives []."""
    if not text:
        return []
    objects: list[Object] = []
    rows = _ROW_RE.findall(text)
    for _, left, right in rows:
        for half, side in ((left, "left"), (right, "right")):
            objects += [o for o in (_slot_object(s.strip(), side) for s in half.split(",")) if o]
    if rows:
        return objects
    for count, color, shape, side in _SENTENCE_RE.findall(text):
        objects += [(color, shape, side)] * (1 if count in ("a", "an") else int(count))
    return objects


def object_counts(predicted: Iterable[Object], gold: Iterable[Object]) -> tuple[int, int, int]:
    """(matched, predicted, gold) object counts of one caption, matching as multisets: an object is
    matched when colour, shape and side all agree, at most as often as it occurs in the gold."""
    p, g = Counter(predicted), Counter(gold)
    return sum((p & g).values()), sum(p.values()), sum(g.values())


def precision_recall(counts: Iterable[tuple[int, int, int]]) -> tuple[float, float]:
    """Micro-averaged object precision and recall over many captions' `object_counts`."""
    matched = predicted = gold = 0
    for m, p, g in counts:
        matched, predicted, gold = matched + m, predicted + p, gold + g
    return (matched / predicted if predicted else 0.0), (matched / gold if gold else 0.0)
