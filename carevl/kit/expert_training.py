"""Training the kit's text reward models ("experts", paper 3.2) with TRL's RewardTrainer.

Each expert reads (caption, question) as the user turn and a response as the assistant turn, exactly
as curation renders them (`carevl.prompts.expert_messages`), and learns a Bradley-Terry reward from
preference pairs of synthetic items: the response with the higher gold score is chosen. Real reward
models disagree because they saw different data, with different noise, from different starting
points; so does each expert here (`ExpertRecipe`): its own item stream, label-noise rate, caption
corruption rate, question mix and seed. The captions it trains on are grid captions of the true scene
with some cells corrupted, so it learns to lean on an imperfect caption as it must at curation time,
when a model writes the caption.
"""
from __future__ import annotations

import itertools
import random
import tempfile
from dataclasses import dataclass, field

import datasets

from carevl.data.captions import grid_caption
from carevl.data.shapes import COLORS, SHAPES, Scene, Shape, make_scene
from carevl.data.synth import CATEGORIES, SynthSpec, item_rng, make_responses, make_task
from carevl.prompts import expert_messages


@dataclass(frozen=True)
class ExpertRecipe:
    """What makes one expert differ from the others (see the module docstring)."""

    seed: int
    items: int = 600
    label_noise: float = 0.1
    caption_noise: float = 0.1         # chance that a drawn shape is described wrongly in the caption
    category_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)   # in `CATEGORIES` order
    epochs: float = 2.0
    learning_rate: float = 3e-3
    batch_size: int = 32
    trainer: dict = field(default_factory=dict)   # extra TRL RewardConfig fields


def noisy_caption(rng: random.Random, scene: Scene, rate: float) -> str:
    """The grid caption of `scene` with each shape, at probability `rate`, given a wrong colour or
    shape (the kind of slip a small caption model makes)."""
    shapes = []
    for s in scene.shapes:
        if rng.random() < rate:
            if rng.random() < 0.5:
                s = Shape(s.kind, rng.choice([c for c in COLORS if c != s.color]), s.cell)
            else:
                s = Shape(rng.choice([k for k in SHAPES if k != s.kind]), s.color, s.cell)
        shapes.append(s)
    return grid_caption(Scene(scene.size, tuple(shapes)))


def preference_rows(seed: int, stream: str, n_items: int, label_noise: float = 0.0, caption_noise: float = 0.0,
                    category_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
                    image_size: int = 64) -> list[dict]:
    """Conversational preference rows {prompt, chosen, rejected, category, flipped} from `n_items`
    synthetic items of one stream; every pair of responses with different gold scores gives a row, its
    labels swapped with probability `label_noise`."""
    rng = random.Random(f"experts:{stream}:{seed}")
    spec = SynthSpec(judge_accuracy=None, image_size=image_size)
    rows = []
    for index in range(n_items):
        item = item_rng(seed, index, stream)
        scene = make_scene(item, image_size)
        category = rng.choices(CATEGORIES, weights=category_weights)[0]
        task = make_task(item, scene, (category,))
        responses = make_responses(item, scene, task, spec)
        caption = noisy_caption(rng, scene, caption_noise)
        for a, b in itertools.combinations(responses, 2):
            if a.gold == b.gold:
                continue
            chosen, rejected = (a, b) if a.gold > b.gold else (b, a)
            flipped = rng.random() < label_noise
            if flipped:
                chosen, rejected = rejected, chosen
            prompt = expert_messages(caption, task.question, chosen.text)[:1]
            rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen.text}],
                         "rejected": [{"role": "assistant", "content": rejected.text}],
                         "category": task.category, "flipped": flipped})
    return rows


def train_expert(model, tokenizer, recipe: ExpertRecipe, max_length: int = 512) -> dict:
    """Train `model` (a sequence classifier with one label) in place; returns TRL's final metrics."""
    from trl import RewardConfig, RewardTrainer

    rows = preference_rows(recipe.seed, f"expert-{recipe.seed}", recipe.items, recipe.label_noise,
                           recipe.caption_noise, recipe.category_weights)
    dataset = datasets.Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    with tempfile.TemporaryDirectory(prefix="carevl-expert-") as scratch:
        args = RewardConfig(
            output_dir=scratch, num_train_epochs=recipe.epochs, per_device_train_batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate, lr_scheduler_type="cosine", warmup_steps=10,
            logging_steps=10, report_to="none", save_strategy="no", use_cpu=True, max_length=max_length,
            seed=recipe.seed, disable_tqdm=True, dataloader_num_workers=0,
            # TRL turns on bf16 autocast and gradient checkpointing by default: on a CPU without bf16
            # units both only slow a micro model down (about 15x together).
            bf16=False, gradient_checkpointing=False, **recipe.trainer)
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
        result = trainer.train()
    model.eval()
    return {"pairs": len(rows), "steps": result.global_step, "train_loss": round(result.training_loss, 4),
            "seconds": round(result.metrics.get("train_runtime", 0.0), 1)}
