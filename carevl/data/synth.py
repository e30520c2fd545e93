"""Synthetic items whose answers are known: PIL-drawn shapes, questions about them, graded responses.

Each image is a small grid of non-overlapping circles, squares and triangles in a few flat colours,
drawn without anti-aliasing so every pixel has an exact palette colour. Questions ask for a count, a
colour, a position (left/right half) or a description. Candidate responses are built with known
correctness, optional hallucinated details (an object or colour that is not in the image) and optional
filler that makes them longer; `gold_scores` records their quality (higher is better). Optional noisy
strong-judge verdicts, right with probability `judge_accuracy`, mimic what public datasets ship.

Everything is a pure function of (seed, index): shards can be generated independently, in any order,
and the same seed always yields byte-identical files.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from carevl.data import io as dio
from carevl.data.captions import grid_caption
from carevl.data.images import encode_data_url, encode_png
from carevl.data.shapes import (  # noqa: F401 - re-exported: the scene vocabulary
    BACKGROUND, COLORS, GRID, MAX_SHAPES, SHAPES, Scene, Shape, cell_box, draw_scene, make_scene,
)
from carevl.schema import ITEM_SCHEMA

NEVER_DRAWN = ("star", "hexagon", "heart")   # shapes a hallucinated detail may invent
CATEGORIES = ("counting", "color", "position", "hallucination")
MODEL_NAMES = ("synth-vlm-small", "synth-vlm-base", "synth-vlm-large", "synth-vlm-chat", "synth-vlm-pro")
MANIFEST = "_synth.json"
CHUNK_ROWS = 500          # items generated and held in memory at once (one Parquet row group)

_OPENERS = (
    "Let me study the picture carefully before I answer.",
    "This question is about the shapes in the image, so I will go through them one by one.",
    "I looked at every part of the image, from the left edge to the right edge.",
)
_CLOSERS = (
    "I hope this detailed explanation helps.",
    "Let me know if you would like me to describe anything else in the picture.",
    "That is my careful reading of the image as a whole.",
)


@dataclass(frozen=True)
class SynthSpec:
    """Knobs of the generator. Rates are per extra response (each item always has at least one correct
    and one incorrect response, so every item holds a real preference)."""

    image_size: int = 64
    min_responses: int = 2
    max_responses: int = 5
    correct_rate: float = 0.5
    hallucination_rate: float = 0.25
    verbose_rate: float = 0.3
    judge_accuracy: float | None = 0.8
    with_responses: bool = True
    with_captions: bool = False        # ship each image's true grid caption (`caption` column)
    categories: tuple[str, ...] = CATEGORIES

    def __post_init__(self) -> None:
        if not 2 <= self.min_responses <= self.max_responses:
            raise ValueError("need 2 <= min_responses <= max_responses")
        if self.image_size < 4 * GRID:
            raise ValueError(f"image_size must be at least {4 * GRID}")
        for name in ("correct_rate", "hallucination_rate", "verbose_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.judge_accuracy is not None and not 0.0 <= self.judge_accuracy <= 1.0:
            raise ValueError("judge_accuracy must be in [0, 1]")
        if not self.categories or set(self.categories) - set(CATEGORIES):
            raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}")


# ------------------------------------------------------------------------------------------ scenes

def item_rng(seed: int, index: int, stream: str = "items") -> random.Random:
    """The private random stream of one item: a pure function of (stream, seed, index)."""
    return random.Random(f"carevl-synth:{stream}:{seed}:{index}")


# --------------------------------------------------------------------------------------- questions

@dataclass
class Task:
    """A question with its known answer: phrasings of the right answer, of wrong ones, and the fact a
    judge would cite as evidence."""

    category: str
    question: str
    fact: str
    right: list[str]
    wrong: list[str]


def _a(words: str) -> str:
    """The indefinite article for a noun phrase ('an orange circle')."""
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _noun(n: int, color: str, kind: str) -> str:
    return f"one {color} {kind}" if n == 1 else f"{'no' if n == 0 else n} {color} {kind}s"


def _counting(rng: random.Random, scene: Scene) -> Task:
    target = rng.choice(scene.shapes)
    color, kind = (target.color, target.kind) if rng.random() < 0.8 else (rng.choice(list(COLORS)), target.kind)
    n = scene.count(color, kind)
    fact = f"the image contains {_noun(n, color, kind)}"
    return Task("counting", f"How many {color} {kind}s are in the image?", fact,
                [f"There {'is' if n == 1 else 'are'} {_noun(n, color, kind)} in the image.", f"I count {n}."],
                [f"There {'is' if m == 1 else 'are'} {_noun(m, color, kind)} in the image."
                 for m in range(MAX_SHAPES + 1) if m != n] + [f"I count {m}." for m in range(1, 4) if m != n])


def _color(rng: random.Random, scene: Scene) -> Task | None:
    unique = [s for s in scene.shapes if scene.count(kind=s.kind) == 1]
    if unique:
        shape, where = rng.choice(unique), " in the image"
    else:
        unique = [s for s in scene.shapes if scene.count(kind=s.kind, side=s.side) == 1]
        if not unique:
            return None
        shape = rng.choice(unique)
        where = f" on the {shape.side} side of the image"
    others = [c for c in COLORS if c != shape.color]
    return Task("color", f"What color is the {shape.kind}{where}?",
                f"the {shape.kind}{where} is {shape.color}",
                [f"The {shape.kind} is {shape.color}.", f"It is {shape.color}."],
                [f"The {shape.kind} is {c}." for c in others] + [f"It is {c}." for c in others])


def _position(rng: random.Random, scene: Scene) -> Task:
    target = rng.choice(scene.shapes)
    side = rng.choice(("left", "right"))
    thing = f"{target.color} {target.kind}"
    present = scene.count(target.color, target.kind, side) > 0
    other = "right" if side == "left" else "left"
    yes = [f"Yes, there is {_a(thing)} on the {side} side.", f"Yes, the {side} half contains {_a(thing)}."]
    no = [f"No, there is no {thing} on the {side} side.", f"No, the {side} half has no {thing}."]
    if not present:
        no.append(f"No, the {thing} is on the {other} side.")
    fact = f"there is {_a(thing) if present else 'no ' + thing} in the {side} half of the image"
    return Task("position", f"Is there {_a(thing)} on the {side} side of the image?", fact,
                yes if present else no, no if present else yes)


def describe(scene: Scene, swap: tuple[int, str] | None = None) -> str:
    """One sentence listing the shapes by colour, kind and side; `swap` recolours one shape (a wrong
    description)."""
    shapes = list(scene.shapes)
    if swap is not None:
        i, color = swap
        shapes[i] = Shape(shapes[i].kind, color, shapes[i].cell)
    groups: dict[tuple[str, str, str], int] = {}
    for s in shapes:
        groups[(s.color, s.kind, s.side)] = groups.get((s.color, s.kind, s.side), 0) + 1
    parts = [f"{_a(c + ' ' + k) if n == 1 else f'{n} {c} {k}s'} on the {side}"
             for (c, k, side), n in sorted(groups.items(), key=lambda g: (g[0][2], g[0][1], g[0][0]))]
    listing = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"The image shows {listing}."


def _description(rng: random.Random, scene: Scene) -> Task:
    right = describe(scene)
    wrong = []
    for i, shape in enumerate(scene.shapes):
        for color in COLORS:
            if color != shape.color:
                wrong.append(describe(scene, (i, color)))
    wrong = sorted(set(wrong) - {right})
    rng.shuffle(wrong)
    question = rng.choice(("Describe the shapes in the image.", "What shapes do you see, and where are they?"))
    return Task("hallucination", question, right[0].lower() + right[1:-1], [right], wrong)


def make_task(rng: random.Random, scene: Scene, categories: tuple[str, ...]) -> Task:
    """A question about the scene in a randomly chosen category (colour falls back to counting when no
    shape can be named unambiguously)."""
    category = rng.choice(categories)
    if category == "color":
        task = _color(rng, scene)
        if task is not None:
            return task
        category = "counting"
    if category == "counting":
        return _counting(rng, scene)
    if category == "position":
        return _position(rng, scene)
    return _description(rng, scene)


# --------------------------------------------------------------------------------------- responses

@dataclass
class Response:
    """One candidate response and the facts that fix its quality."""

    text: str
    claim: str                    # the answer sentence inside the text
    correct: bool
    hallucination: str | None     # the invented object, if any
    verbose: bool
    model: str

    @property
    def gold(self) -> float:
        """Known quality, higher is better: any correct answer outranks any wrong one; an invented
        object costs 0.5, filler 0.2."""
        return (1.0 if self.correct else 0.0) - (0.5 if self.hallucination else 0.0) - (0.2 if self.verbose else 0.0)


def _invented_object(rng: random.Random, scene: Scene) -> str:
    """An object that is certainly not in the image: an unused colour, or a shape never drawn."""
    unused = [c for c in COLORS if scene.count(color=c) == 0]
    if unused and rng.random() < 0.6:
        return f"{rng.choice(unused)} {rng.choice(SHAPES)}"
    return f"{rng.choice(list(COLORS))} {rng.choice(NEVER_DRAWN)}"


def make_response(rng: random.Random, scene: Scene, task: Task, correct: bool, hallucinate: bool,
                  verbose: bool) -> Response:
    claim = rng.choice(task.right if correct else task.wrong)
    text = claim
    invented = None
    if hallucinate:
        invented = _invented_object(rng, scene)
        text += f" There is also {_a(invented)} {rng.choice(('near the top', 'in a corner', 'next to it'))}."
    if verbose:
        text = " ".join(rng.sample(_OPENERS, rng.randint(1, 2)) + [text] + rng.sample(_CLOSERS, rng.randint(1, 2)))
    return Response(text, claim, correct, invented, verbose, rng.choice(MODEL_NAMES))


def make_responses(rng: random.Random, scene: Scene, task: Task, spec: SynthSpec) -> list[Response]:
    """min..max distinct responses, at least one right and one wrong, in random order."""
    k = rng.randint(spec.min_responses, spec.max_responses)
    plan = [True, False] + [rng.random() < spec.correct_rate for _ in range(k - 2)]
    responses: list[Response] = []
    for correct in plan:
        for _ in range(8):   # retry a few times for a text not used yet
            r = make_response(rng, scene, task, correct, rng.random() < spec.hallucination_rate,
                              rng.random() < spec.verbose_rate)
            if all(r.text != other.text for other in responses):
                responses.append(r)
                break
    rng.shuffle(responses)
    return responses


# -------------------------------------------------------------------------------------- judgements

def _faults(r: Response) -> list[str]:
    faults = [] if r.correct else [f"its answer '{r.claim}' does not match the image"]
    if r.hallucination:
        faults.append(f"it mentions {_a(r.hallucination)}, which is not in the image")
    if r.verbose:
        faults.append("it pads the answer with filler")
    return faults


def _explain(task: Task, chosen: Response, other: Response, chosen_label: str, other_label: str,
             honest: bool) -> str:
    if not honest:
        # A mistaken judge: it trusts the chosen answer's own claim as if it were the evidence.
        return (f"Answer {chosen_label} is better. It says '{chosen.claim}', which agrees with what I see "
                f"in the image, while Answer {other_label} seems less accurate.")
    text = f"Answer {chosen_label} is better. Looking at the image, {task.fact}."
    faults = _faults(other)
    if faults:
        text += f" Answer {other_label} is weaker: " + "; ".join(faults) + "."
    own = _faults(chosen)
    if own:
        text += f" Answer {chosen_label} is not perfect either (" + "; ".join(own) + ")."
    return text


def judge_pairs(rng: random.Random, task: Task, responses: list[Response], accuracy: float) -> list[dict]:
    """A noisy strong-judge verdict for every unordered pair (a < b): the better response (by gold
    score) is chosen with probability `accuracy`; a gold tie is a coin flip. `choice` A means
    response a."""
    out = []
    for a, b in itertools.combinations(range(len(responses)), 2):
        ra, rb = responses[a], responses[b]
        if ra.gold == rb.gold:
            better, honest = rng.choice("AB"), True
        else:
            better, honest = ("A" if ra.gold > rb.gold else "B"), rng.random() < accuracy
        choice = better if honest else ("B" if better == "A" else "A")
        chosen, other = (ra, rb) if choice == "A" else (rb, ra)
        labels = ("A", "B") if choice == "A" else ("B", "A")
        out.append({"a": a, "b": b, "choice": choice,
                    "explanation": _explain(task, chosen, other, *labels, honest=honest)})
    return out


# ------------------------------------------------------------------------------------------- items

def make_item(seed: int, index: int, spec: SynthSpec = SynthSpec(), stream: str = "items") -> dict[str, Any]:
    """One ITEM_SCHEMA row; a pure function of (seed, index, spec, stream)."""
    rng = item_rng(seed, index, stream)
    scene = make_scene(rng, spec.image_size)
    task = make_task(rng, scene, spec.categories)
    row: dict[str, Any] = {
        "item_id": f"synth-{seed}-{index:09d}", "image_path": None,
        "image_bytes": encode_png(draw_scene(scene)), "question": task.question,
        "responses": None, "response_models": None, "judgements": None, "gold_scores": None,
        "category": task.category, "caption": grid_caption(scene) if spec.with_captions else None,
    }
    if spec.with_responses:
        responses = make_responses(rng, scene, task, spec)
        row["responses"] = [r.text for r in responses]
        row["response_models"] = [r.model for r in responses]
        row["gold_scores"] = [r.gold for r in responses]
        if spec.judge_accuracy is not None:
            row["judgements"] = judge_pairs(rng, task, responses, spec.judge_accuracy)
    return row


def iter_items(n_items: int, seed: int, spec: SynthSpec = SynthSpec(), start: int = 0) -> Iterator[dict[str, Any]]:
    for index in range(start, start + n_items):
        yield make_item(seed, index, spec)


EVAL_PAIR_SCHEMA = pa.schema([(name, pa.string()) for name in
                              ("id", "image", "question", "response_a", "response_b", "label", "category")])


@dataclass
class SynthResult:
    output: str
    items: int
    files: list[str] = field(default_factory=list)
    skipped_shards: int = 0
    bytes_written: int = 0


def _check_manifest(fs: pafs.FileSystem, root: str, manifest: dict) -> None:
    """Refuse to mix runs: an output folder holds one (kind, seed, size, spec) only, so resuming is safe."""
    path = f"{root}/{MANIFEST}"
    if fs.get_file_info(path).type == pafs.FileType.File:
        with fs.open_input_stream(path) as handle:
            found = json.loads(handle.read())
        if found != manifest:
            diff = sorted(k for k in manifest if found.get(k) != manifest[k])
            raise ValueError(f"{path}: this folder holds synthetic data written with different settings "
                             f"({', '.join(diff)}); use a new output folder")
        return
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(path) as handle:
        handle.write(json.dumps(manifest, sort_keys=True).encode())


def _write_one_shard(output: str, shard: int, n_rows: int, make_row: Callable[[int], dict[str, Any]],
                     schema: pa.Schema, format: dio.Format, shard_size: int, chunk_rows: int,
                     filesystem: pafs.FileSystem | None) -> bool:
    """Write shard `shard` (rows [shard*shard_size, ...)) unless it exists; True if it was written.
    The file is streamed `chunk_rows` rows (one row group) at a time and published atomically."""
    uri = dio.join(output, dio.shard_name(shard, format))
    if dio.file_exists(uri, filesystem):
        return False
    start, stop = shard * shard_size, min(n_rows, (shard + 1) * shard_size)
    chunks = (dio.rows_to_table([make_row(i) for i in range(lo, min(lo + chunk_rows, stop))], schema)
              for lo in range(start, stop, chunk_rows))
    dio.write_batches(chunks, uri, schema, format, filesystem=filesystem)
    return True


def _write_shards(output: str, n_rows: int, make_row: Callable[[int], dict[str, Any]], schema: pa.Schema,
                  manifest: dict, format: dio.Format, shard_size: int, chunk_rows: int,
                  filesystem: pafs.FileSystem | None, workers: int = 1) -> SynthResult:
    """Rows make_row(0..n_rows-1) as part files of `shard_size` rows, shard k holding rows
    [k*shard_size, (k+1)*shard_size). Memory per writer is bounded by one chunk whatever the size. A
    shard already on disk is kept: a killed run re-run with the same arguments finishes without
    duplicating or losing rows. With workers > 1 the shards are Ray tasks (Ray must be initialised),
    at most `workers` in flight; the files are byte-identical to a serial run."""
    if n_rows < 0 or shard_size < 1 or chunk_rows < 1 or workers < 1:
        raise ValueError("need a count >= 0, and shard_size, chunk_rows, workers >= 1")
    fs, root = dio.resolve(output, filesystem)
    _check_manifest(fs, root, {**manifest, "rows": n_rows, "format": format, "shard_size": shard_size})
    dio.remove_temp_files(output, filesystem)   # leftovers of a killed run; this job is the only writer
    shards = range(math.ceil(n_rows / shard_size))
    args = (n_rows, make_row, schema, format, shard_size, chunk_rows, filesystem)
    if workers == 1:
        written = [_write_one_shard(output, k, *args) for k in shards]
    else:
        written = _run_as_ray_tasks(output, shards, args, workers)
    result = SynthResult(output=output, items=n_rows, skipped_shards=written.count(False))
    for shard in shards:
        uri = dio.join(output, dio.shard_name(shard, format))
        result.files.append(uri)
        result.bytes_written += fs.get_file_info(dio.resolve(uri, filesystem)[1]).size
    return result


def _run_as_ray_tasks(output: str, shards: range, args: tuple, workers: int) -> list[bool]:
    import ray

    task = ray.remote(num_cpus=1)(_write_one_shard)
    pending: dict[Any, int] = {}
    written: dict[int, bool] = {}
    for shard in shards:
        if len(pending) >= workers:     # bounded: never more than `workers` shards in flight
            [done], _ = ray.wait(list(pending), num_returns=1)
            written[pending.pop(done)] = ray.get(done)
        pending[task.remote(output, shard, *args)] = shard
    for ref, shard in pending.items():
        written[shard] = ray.get(ref)
    return [written[k] for k in shards]


def write_synth_items(output: str, n_items: int, seed: int, spec: SynthSpec = SynthSpec(),
                      format: dio.Format = "parquet", shard_size: int = 10_000,
                      filesystem: pafs.FileSystem | None = None, chunk_rows: int = CHUNK_ROWS,
                      workers: int = 1) -> SynthResult:
    """Write `n_items` ITEM_SCHEMA rows as part files (see `_write_shards` for memory, resume and
    parallel writing)."""
    manifest = {"kind": "items", "seed": seed, "spec": json.loads(json.dumps(asdict(spec)))}
    return _write_shards(output, n_items, functools.partial(make_item, seed, spec=spec), ITEM_SCHEMA,
                         manifest, format, shard_size, chunk_rows, filesystem, workers)


# -------------------------------------------------------------------------------- held-out pairs

def _eval_draw(seed: int, index: int, spec: SynthSpec) -> tuple[Scene, Task, Response, Response]:
    """Scene, task and the (A, B) responses of held-out pair `index`, from its own random stream so it
    does not repeat the training item of the same (seed, index); A/B order is random."""
    spec = SynthSpec(**{**asdict(spec), "with_responses": True, "judge_accuracy": None})
    rng = item_rng(seed, index, "eval")
    scene = make_scene(rng, spec.image_size)
    task = make_task(rng, scene, spec.categories)
    first, second = rng.sample(make_responses(rng, scene, task, spec), 2)
    return scene, task, first, second


def make_eval_pair(seed: int, index: int, spec: SynthSpec = SynthSpec()) -> dict[str, Any]:
    """One held-out pair in the `pairwise` benchmark schema (EVAL_PAIR_SCHEMA)."""
    scene, task, first, second = _eval_draw(seed, index, spec)
    label = "tie" if first.gold == second.gold else ("A" if first.gold > second.gold else "B")
    return {"id": f"synth-eval-{seed}-{index:07d}", "image": encode_data_url(draw_scene(scene)),
            "question": task.question, "response_a": first.text, "response_b": second.text,
            "label": label, "category": task.category}


def eval_pair_truth(seed: int, index: int, spec: SynthSpec = SynthSpec()) -> dict[str, str]:
    """What the image of held-out pair `index` shows (one sentence over all its shapes) and the fact the
    question asks about: the truth a reader holds a judge's explanation against."""
    scene, task, _, _ = _eval_draw(seed, index, spec)
    return {"image_shows": describe(scene), "fact": task.fact}


def surface_cues(r: Response) -> float:
    """What a reader who never checks the claim can still see: gold's penalties for an invented
    object and for filler."""
    return -(0.5 if r.hallucination else 0.0) - (0.2 if r.verbose else 0.0)


def surface_cue_accuracy(n: int, seed: int, spec: SynthSpec = SynthSpec()) -> dict[str, float]:
    """Expected score, as the synthetic benchmark scores a judge (pairs with a preference, right in
    both A/B orders), of a judge that reads only `surface_cues` on the `n` pairs `synth_eval_pairs(n,
    seed, spec)` yields: right where the cues differ and point the way gold does, right half the time
    where they are equal (a consistent coin flip), wrong where they mislead. A judge that scores no
    higher has not learned to check answers against the image. Overall ("all") and per category."""
    hits: dict[str, list[float]] = {}
    for index in range(n):
        _, task, a, b = _eval_draw(seed, index, spec)
        if a.gold == b.gold:
            continue
        cue_a, cue_b = surface_cues(a), surface_cues(b)
        hit = 0.5 if cue_a == cue_b else float((cue_a > cue_b) == (a.gold > b.gold))
        for key in ("all", task.category):
            hits.setdefault(key, []).append(hit)
    return {key: round(sum(v) / len(v), 4) for key, v in hits.items()}


def synth_eval_pairs(n: int, seed: int, spec: SynthSpec = SynthSpec()) -> Iterator[dict[str, Any]]:
    """`n` held-out pairs {id, image (data URL), question, response_a, response_b, label (A|B|tie),
    category}, generated lazily."""
    for index in range(n):
        yield make_eval_pair(seed, index, spec)


def write_eval_pairs(output: str, n_pairs: int, seed: int, spec: SynthSpec = SynthSpec(),
                     format: dio.Format = "jsonl", shard_size: int = 10_000,
                     filesystem: pafs.FileSystem | None = None, chunk_rows: int = CHUNK_ROWS,
                     workers: int = 1) -> SynthResult:
    """Write `n_pairs` held-out pairs as part files (JSONL by default, the `pairwise` benchmark format)."""
    manifest = {"kind": "eval_pairs", "seed": seed, "spec": json.loads(json.dumps(asdict(spec)))}
    return _write_shards(output, n_pairs, functools.partial(make_eval_pair, seed, spec=spec), EVAL_PAIR_SCHEMA,
                         manifest, format, shard_size, chunk_rows, filesystem, workers)
