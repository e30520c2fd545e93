"""Scenes of flat-coloured shapes on a grid, and their rendering: the pictures behind synthetic items.

Shapes sit in distinct cells of a GRID x GRID layout, so they never overlap and each lies wholly in the
left or right half. Rendering uses no anti-aliasing: every pixel is the background or exactly one palette
colour, which lets tests recover the scene from the pixels alone.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 160, 70), "blue": (40, 90, 220),
    "yellow": (235, 200, 40), "purple": (140, 60, 180), "orange": (245, 140, 30),
}
BACKGROUND = (255, 255, 255)
GRID = 4                                     # cells per side; columns 0-1 are "left", 2-3 "right"
MAX_SHAPES = 6


@dataclass(frozen=True)
class Shape:
    kind: str
    color: str
    cell: int          # index in the GRID x GRID layout, row-major

    @property
    def side(self) -> str:
        return "left" if self.cell % GRID < GRID // 2 else "right"


@dataclass(frozen=True)
class Scene:
    size: int
    shapes: tuple[Shape, ...]

    def count(self, color: str | None = None, kind: str | None = None, side: str | None = None) -> int:
        return sum(1 for s in self.shapes if (color is None or s.color == color)
                   and (kind is None or s.kind == kind) and (side is None or s.side == side))


def make_scene(rng: random.Random, size: int) -> Scene:
    """1-6 shapes in distinct grid cells, so they never overlap and each lies in one half."""
    n = rng.randint(1, MAX_SHAPES)
    cells = sorted(rng.sample(range(GRID * GRID), n))
    return Scene(size, tuple(Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), c) for c in cells))


def cell_box(scene: Scene, cell: int) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of a grid cell; shapes are drawn inside it with a margin."""
    step = scene.size // GRID
    x0, y0 = (cell % GRID) * step, (cell // GRID) * step
    return x0, y0, x0 + step, y0 + step


def draw_scene(scene: Scene) -> Image.Image:
    """Render without anti-aliasing: every pixel is the background or exactly one palette colour."""
    image = Image.new("RGB", (scene.size, scene.size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    margin = max(1, scene.size // (GRID * 6))
    for shape in scene.shapes:
        x0, y0, x1, y1 = cell_box(scene, shape.cell)
        box = (x0 + margin, y0 + margin, x1 - margin - 1, y1 - margin - 1)
        fill = COLORS[shape.color]
        if shape.kind == "circle":
            draw.ellipse(box, fill=fill)
        elif shape.kind == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([((box[0] + box[2]) // 2, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
    return image
