"""LLaVA-style alignment of the micro LLaVA on synthetic scenes: the kit's caption model and base judge.

A real LLaVA starts from a pretrained CLIP encoder and a pretrained language model, aligns the
projector to the language model's word embeddings (stage 1), then tunes projector and language model
on instructions (stage 2). The micro LLaVA has neither pretrained part, so the recipe adds a stand-in
for CLIP's pretraining and keeps LLaVA's two stages:

0. vision pretraining: each patch token of the vision tower (at LLaVA's feature layer) learns the
   colour and shape in its grid cell, through a probe head that is thrown away afterwards;
1. feature alignment: vision tower frozen, the projector maps every patch onto the language model's
   word embeddings of its colour and shape words (LLaVA stage 1);
2. instruction tuning: vision tower still frozen, projector and language model learn, in equal parts,
   three kinds of visual instruction (LLaVA stage 2): write the grid caption of `carevl.data.captions`
   in answer to the curation caption prompt; answer one question about the image; and say whether one
   given answer to such a question is right, naming any object it invents. Instruction data of real
   LVLMs hold all three (captions, VQA, yes/no checks of a statement), and a judge needs the third to
   read answers against the image at all: without it, SFT on the demo's ~90 high-confidence pairs
   left the micro judge at chance. The model still never sees two answers side by side or a verdict:
   it can describe, answer and check one answer, not compare and judge. A fourth kind, multiple-choice
   questions ("choice"), is available to experiments (`benchmarks/base_skills.py`) but not in the
   kit's mix: as alignment data it left the demo's SFT judge at chance (README).

The loops are plain PyTorch rather than a generic trainer: the steps are tiny, and computing logits
only for the caption tokens (`logits_to_keep`) roughly halves each step on CPU. Data are pure
functions of (seed, step), so a build repeats exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from carevl.data.captions import EMPTY, grid_caption
from carevl.data.shapes import COLORS, GRID, SHAPES, Scene, draw_scene, make_scene
from carevl.data.synth import CATEGORIES, SynthSpec, item_rng, make_response, make_task
from carevl.prompts import caption_messages

COLOR_CLASSES = (EMPTY, *COLORS)   # class 0: no shape in the cell
SHAPE_CLASSES = (EMPTY, *SHAPES)


INSTRUCTION_KINDS = ("caption", "question", "check", "choice")
KIT_INSTRUCTION_KINDS = ("caption", "question", "check")
CHECK_STYLES = ("yes_no", "restate")
RESTATED_VERDICT = "So the answer is"   # how a "restate" check ends: "... So the answer is right."


@dataclass(frozen=True)
class AlignmentRecipe:
    seed: int = 0
    image_size: int = 64
    vision_steps: int = 100
    projector_steps: int = 100
    instruction_steps: int = 1200
    vision_batch: int = 64
    instruction_batch: int = 16
    vision_lr: float = 3e-3
    instruction_lr: float = 1e-3
    warmup_steps: int = 30
    instruction_kinds: tuple[str, ...] = KIT_INSTRUCTION_KINDS   # one kind per step, in turn
    check_style: str = "yes_no"    # or "restate": restate the claim and the fact, then say right or wrong
    categories: tuple[str, ...] = CATEGORIES   # question categories of the question and check examples

    def __post_init__(self) -> None:
        unknown = set(self.instruction_kinds) - set(INSTRUCTION_KINDS)
        if not self.instruction_kinds or unknown:
            raise ValueError(f"instruction_kinds must be a non-empty sequence of {INSTRUCTION_KINDS}")
        if self.check_style not in CHECK_STYLES:
            raise ValueError(f"unknown check style {self.check_style!r}; known: {CHECK_STYLES}")
        if not self.categories or set(self.categories) - set(CATEGORIES):
            raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}")


def training_scenes(recipe: AlignmentRecipe, stream: str, start: int, n: int) -> list[Scene]:
    """Scenes `start .. start+n-1` of a named stream (disjoint from the items the pipeline curates)."""
    return [make_scene(item_rng(recipe.seed, i, f"align-{stream}"), recipe.image_size) for i in range(start, start + n)]


def patch_targets(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """(colour class, shape class) of every cell, each of shape (batch, GRID*GRID); 0 = empty."""
    colors = torch.zeros(len(scenes), GRID * GRID, dtype=torch.long)
    shapes = torch.zeros_like(colors)
    for k, scene in enumerate(scenes):
        for shape in scene.shapes:
            colors[k, shape.cell] = COLOR_CLASSES.index(shape.color)
            shapes[k, shape.cell] = SHAPE_CLASSES.index(shape.kind)
    return colors, shapes


def _pixels(processor, scenes: list[Scene]) -> torch.Tensor:
    return processor.image_processor([draw_scene(s) for s in scenes], return_tensors="pt")["pixel_values"]


def _patch_states(model, pixels: torch.Tensor) -> torch.Tensor:
    """Vision-tower states at LLaVA's feature layer, CLS dropped: (batch, patches, vision_hidden)."""
    layer = model.config.vision_feature_layer
    return model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:]


def _attribute_loss(logits_color: torch.Tensor, logits_shape: torch.Tensor, scenes: list[Scene]) -> torch.Tensor:
    colors, shapes = patch_targets(scenes)
    return (F.cross_entropy(logits_color.reshape(-1, logits_color.shape[-1]), colors.reshape(-1))
            + F.cross_entropy(logits_shape.reshape(-1, logits_shape.shape[-1]), shapes.reshape(-1)))


def pretrain_vision(model, processor, recipe: AlignmentRecipe) -> list[float]:
    """Stage 0: vision tower + a throw-away probe learn each cell's colour and shape."""
    tower = model.model.vision_tower
    probe = torch.nn.Linear(tower.config.hidden_size, len(COLOR_CLASSES) + len(SHAPE_CLASSES))
    optimizer = torch.optim.AdamW([*tower.parameters(), *probe.parameters()], lr=recipe.vision_lr)
    losses = []
    for step in range(recipe.vision_steps):
        scenes = training_scenes(recipe, "vision", step * recipe.vision_batch, recipe.vision_batch)
        logits = probe(_patch_states(model, _pixels(processor, scenes)))   # (batch, patches, classes)
        loss = _attribute_loss(logits[..., :len(COLOR_CLASSES)], logits[..., len(COLOR_CLASSES):], scenes)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def attribute_word_ids(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of the colour and shape words as they follow a space in a caption (first piece)."""
    def first(word: str) -> int:
        return tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]
    return (torch.tensor([first(w) for w in COLOR_CLASSES]), torch.tensor([first(w) for w in SHAPE_CLASSES]))


def align_projector(model, processor, recipe: AlignmentRecipe) -> list[float]:
    """Stage 1: vision frozen; projected patches point at the embeddings of their attribute words."""
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    tower.requires_grad_(False)
    color_ids, shape_ids = attribute_word_ids(processor.tokenizer)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=recipe.vision_lr)
    losses = []
    for step in range(recipe.projector_steps):
        scenes = training_scenes(recipe, "projector", step * recipe.vision_batch, recipe.vision_batch)
        with torch.no_grad():
            states = _patch_states(model, _pixels(processor, scenes))
        features = projector(states)                                       # (batch, patches, hidden)
        words = model.get_input_embeddings().weight.detach()
        loss = _attribute_loss(features @ words[color_ids].T, features @ words[shape_ids].T, scenes)
        loss = loss + 1e-3 * features.pow(2).mean()   # keeps the features near the embeddings' scale
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


CHECK_TEMPLATE = "Question: {question}\n\n[Answer]\n{answer}\n[End of Answer]\n\nIs this answer right about the image?"


def answer_check(scene: Scene, task, rng, style: str = "yes_no") -> tuple[str, str]:
    """(user text, target) of one answer-checking example: a candidate answer drawn as the synthetic
    data draws them (right or wrong with equal odds, sometimes with an invented object or filler), and
    whether it is right, plus the invented object if there is one. The "restate" style first restates
    the answer's claim and the fact the image shows, then says whether the answer is right."""
    if style not in CHECK_STYLES:
        raise ValueError(f"unknown check style {style!r}; known: {CHECK_STYLES}")
    spec = SynthSpec()
    correct = rng.random() < 0.5
    answer = make_response(rng, scene, task, correct, rng.random() < spec.hallucination_rate,
                           rng.random() < spec.verbose_rate)
    if style == "restate":
        target = (f"The answer says: {answer.claim} Looking at the image, {task.fact}. "
                  f"{RESTATED_VERDICT} {'right' if correct else 'wrong'}.")
    else:
        target = "Yes, it is right." if correct else "No, it is wrong."
    if answer.hallucination:
        thing = answer.hallucination
        target += f" It mentions {'an' if thing[0] in 'aeiou' else 'a'} {thing}, which the image does not show."
    return CHECK_TEMPLATE.format(question=task.question, answer=answer.text), target


CHOICE_TEMPLATE = "Question: {question}\nA. {a}\nB. {b}\nAnswer with the letter of the right option."


def answer_choice(task, rng) -> tuple[str, str]:
    """(user text, target letter) of one multiple-choice question, the format LLaVA-1.5's instruction
    mix takes from multiple-choice VQA sets: one right and one wrong short answer in random order."""
    right, wrong = rng.choice(task.right), rng.choice(task.wrong)
    if rng.random() < 0.5:
        return CHOICE_TEMPLATE.format(question=task.question, a=right, b=wrong), "A"
    return CHOICE_TEMPLATE.format(question=task.question, a=wrong, b=right), "B"


def instruction(processor, scene: Scene, rng, caption_prompt: str, kind: str,
                check_style: str = "yes_no", categories: tuple[str, ...] = CATEGORIES) -> tuple[str, str]:
    """(prompt text, target text) of one stage-2 example of `kind`: the grid caption, the answer to a
    question (of one of `categories`) about the scene, or the check of one candidate answer (in
    `check_style`)."""
    if kind == "caption":
        return caption_prompt, grid_caption(scene)
    task = make_task(rng, scene, categories)
    if kind == "question":
        text, target = task.question, rng.choice(task.right)
    elif kind == "choice":
        text, target = answer_choice(task, rng)
    else:
        text, target = answer_check(scene, task, rng, check_style)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    prompt = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt, target


def completion_batch(processor, prompts: list[str], targets: list[str], scenes: list[Scene]):
    """Left-padded (prompt + target) encodings and the labels of the last `n` positions, where n
    covers the longest target; positions outside each row's target are -100."""
    tokenizer = processor.tokenizer
    targets = [t + tokenizer.eos_token for t in targets]
    tokenizer.padding_side = "left"
    enc = processor(text=[p + t for p, t in zip(prompts, targets)], images=[draw_scene(s) for s in scenes],
                    return_tensors="pt", padding=True)
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets]
    n = max(lengths)
    labels = enc["input_ids"][:, -n:].clone()                              # (batch, n)
    for k, length in enumerate(lengths):
        labels[k, : n - length] = -100
    return enc, labels


def completion_loss(model, enc: dict, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the last labels.shape[1] tokens, computing logits for those positions only."""
    n = labels.shape[1]
    logits = model(**enc, logits_to_keep=n + 1).logits[:, :-1]            # (batch, n, vocab)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def tune_instructions(model, processor, recipe: AlignmentRecipe) -> list[float]:
    """Stage 2: projector + language model write captions, answers and answer checks (vision frozen)."""
    model.model.vision_tower.requires_grad_(False)
    caption_prompt = processor.tokenizer.apply_chat_template(caption_messages(), tokenize=False,
                                                             add_generation_prompt=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.instruction_lr, weight_decay=0.0)
    total = recipe.instruction_steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / recipe.warmup_steps) * max(0.05, 1 - s / total))
    model.train()
    losses = []
    for step in range(total):
        start = step * recipe.instruction_batch
        scenes = training_scenes(recipe, "instructions", start, recipe.instruction_batch)
        # One kind per step, in turn: each batch pads only to its own kind's lengths (the checks'
        # prompts are long, the captions' targets are), about a third less work than mixed batches.
        kind = recipe.instruction_kinds[step % len(recipe.instruction_kinds)]
        examples = [instruction(processor, scene, item_rng(recipe.seed, start + k, "align-questions"),
                                caption_prompt, kind, recipe.check_style, recipe.categories)
                    for k, scene in enumerate(scenes)]
        loss = completion_loss(model, *completion_batch(processor, [p for p, _ in examples],
                                                        [t for _, t in examples], scenes))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    model.requires_grad_(True)
    return losses


def align(model, processor, recipe: AlignmentRecipe, progress=None) -> dict:
    """All three stages in place; returns the first/last loss and seconds of each. `progress(message)`
    hears when each stage ends."""
    log = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        for name, stage in (("vision", pretrain_vision), ("projector", align_projector),
                            ("instructions", tune_instructions)):
            started = time.perf_counter()
            losses = stage(model, processor, recipe)
            log[name] = {"steps": len(losses), "first_loss": round(losses[0], 4) if losses else None,
                         "last_loss": round(losses[-1], 4) if losses else None,
                         "seconds": round(time.perf_counter() - started, 1)}
            if progress:
                progress(f"alignment stage {name}: {log[name]}")
    return log
