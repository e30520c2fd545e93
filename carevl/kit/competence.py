"""What the kit's trained models can do, measured on held-out synthetic data through the production
wrappers (the same `from_pretrained` loading and batching curation uses).

- Caption model: object precision and recall (colour, shape and side must all match) of greedy
  captions of held-out scenes, read back with `carevl.data.captions.caption_objects`.
- Experts: pairwise accuracy against gold on held-out preference pairs whose captions the caption model
  wrote (as at curation time), with ties counted as abstentions, and the agreement of every two experts
  (the share of pairs on which both vote and vote alike).
- Base judge (the aligned caption model before any judge training), per question category: how often
  its greedy answer to a held-out question is right, and how often it checks one given answer right
  (said "Yes" to a right answer, "No" to a wrong one; no invented object, no filler, so only the
  answer's claim decides). Checking one answer against the image is what a pairwise judge builds on;
  where the base checks at chance, SFT can only teach the judge the answers' text cues.
"""
from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from carevl.config import ModelSpec, Resources
from carevl.data.captions import caption_objects, object_counts, precision_recall, scene_objects
from carevl.data.shapes import draw_scene, make_scene
from carevl.data.synth import CATEGORIES, SynthSpec, item_rng, make_responses, make_task
from carevl.kit.alignment import CHECK_TEMPLATE, RESTATED_VERDICT
from carevl.models.backends.transformers import RewardScorer, VLMGenerator
from carevl.kit.tiny import CAPTION_ROLE, EXPERT_ROLES, KIT_VERSION, build_tiny_models, read_marker
from carevl.prompts import caption_messages, expert_messages

HELDOUT_STREAM = "kit-heldout"   # never used for training any role
REPORT = "kit_report.json"
REPORT_VERSION = 2   # bump when the report gains or changes a measurement


def heldout_scenes(seed: int, n: int, image_size: int = 64):
    return [make_scene(item_rng(seed, i, HELDOUT_STREAM), image_size) for i in range(n)]


def _vlm(folder: Path, batch_size: int = 32) -> VLMGenerator:
    spec = ModelSpec(path=str(folder), kind="vlm", dtype="float32", max_length=512,
                     resources=Resources(batch_size=batch_size))
    return VLMGenerator(spec, folder.parent)


def write_captions(folder: Path, scenes, batch_size: int = 32, max_new_tokens: int = 160) -> list[str]:
    """Greedy captions of `scenes` by the caption model saved in `folder`."""
    generator = _vlm(folder, batch_size)
    outputs = generator.generate([caption_messages()] * len(scenes), [draw_scene(s) for s in scenes],
                                 temperature=0.0, max_new_tokens=max_new_tokens)
    return [samples[0] for samples in outputs]


def caption_competence(captions: list[str], scenes) -> dict:
    """Object precision / recall of captions against their scenes."""
    counts = [object_counts(caption_objects(c), scene_objects(s)) for c, s in zip(captions, scenes)]
    precision, recall = precision_recall(counts)
    return {"images": len(scenes), "precision": round(precision, 4), "recall": round(recall, 4)}


def heldout_pairs(seed: int, scenes, captions: list[str]) -> list[dict]:
    """Non-tied response pairs of one held-out item per scene, each with its model-written caption."""
    spec = SynthSpec(judge_accuracy=None)
    pairs = []
    for index, (scene, caption) in enumerate(zip(scenes, captions)):
        rng = item_rng(seed, index, HELDOUT_STREAM + "-questions")
        task = make_task(rng, scene, spec.categories)
        responses = make_responses(rng, scene, task, spec)
        for a, b in itertools.combinations(responses, 2):
            if a.gold != b.gold:
                pairs.append({"caption": caption, "question": task.question, "a": a.text, "b": b.text,
                              "gold": "A" if a.gold > b.gold else "B", "category": task.category})
    return pairs


def expert_votes(folder: Path, pairs: list[dict]) -> np.ndarray:
    """One expert's votes on `pairs`: +1 for A, -1 for B, 0 for a tie (an abstention), shape (pairs,)."""
    spec = ModelSpec(path=str(folder), kind="reward", dtype="float32", max_length=512,
                     resources=Resources(batch_size=64))
    scorer = RewardScorer(spec, folder.parent)
    texts = [scorer.render(expert_messages(p["caption"], p["question"], p[side])) for p in pairs for side in "ab"]
    scores = scorer.score(texts).reshape(len(pairs), 2)     # (pairs, [a, b])
    return np.sign(scores[:, 0] - scores[:, 1])


def expert_competence(votes: dict[str, np.ndarray], pairs: list[dict]) -> dict:
    """Accuracy (abstentions excluded) of each expert and the agreement of every two experts."""
    gold = np.array([1 if p["gold"] == "A" else -1 for p in pairs])
    report = {"pairs": len(pairs), "accuracy": {}, "abstained": {}, "agreement": {}}
    for name, v in votes.items():
        voted = v != 0
        report["accuracy"][name] = round(float((v[voted] == gold[voted]).mean()) if voted.any() else 0.0, 4)
        report["abstained"][name] = int((~voted).sum())
    for (x, vx), (y, vy) in itertools.combinations(votes.items(), 2):
        both = (vx != 0) & (vy != 0)
        report["agreement"][f"{x}|{y}"] = round(float((vx[both] == vy[both]).mean()) if both.any() else 0.0, 4)
    return report


def answer_is_right(task, answer: str, scene) -> bool:
    """A right answer: one of the task's right phrasings, or for a description, the scene's objects."""
    if task.category == "hallucination":
        return Counter(caption_objects(answer)) == Counter(scene_objects(scene))
    return answer.strip() in task.right


def _rates(hits: dict[str, list[bool]]) -> dict[str, float]:
    every = [h for values in hits.values() for h in values]
    return {"all": round(float(np.mean(every)), 4),
            **{c: round(float(np.mean(hits[c])), 4) for c in CATEGORIES if hits.get(c)}}


def restated_verdict(text: str) -> bool | None:
    """True / False for a check written in the "restate" style ("... So the answer is right."), None
    when the text reaches no such verdict."""
    tail = text.rsplit(RESTATED_VERDICT, 1)
    if len(tail) != 2:
        return None
    word = tail[1].strip().split(" ", 1)[0].strip(".,;")
    return {"right": True, "wrong": False}.get(word)


def _calls_right(generator: VLMGenerator, cases: list, check_style: str) -> np.ndarray:
    """Whether the base calls each case's answer right: "Yes" against "No" at the first token, or, for
    a base trained on restating checks, the verdict its greedy check ends with (none counts as wrong)."""
    conversations, images = [c[2] for c in cases], [c[3] for c in cases]
    if check_style == "yes_no":
        log_probs = generator.score_next_token(conversations, images, ["Yes", "No"])
        return log_probs[:, 0] > log_probs[:, 1]
    texts = generator.generate(conversations, images, temperature=0.0, max_new_tokens=160)
    verdicts = [restated_verdict(t[0]) for t in texts]
    return np.array([v if v is not None else not right for v, (_, right, _, _) in zip(verdicts, cases)])


def base_judge_skills(folder: Path, scenes, seed: int, check_style: str = "yes_no") -> dict:
    """Answer and single-answer check accuracy of the aligned base per category (module docstring)."""
    generator = _vlm(folder)   # caption_messages(text): one user turn of the image and `text`
    images = [draw_scene(s) for s in scenes]
    tasks = [make_task(item_rng(seed, i, HELDOUT_STREAM + "-skills"), s, CATEGORIES) for i, s in enumerate(scenes)]
    answers = generator.generate([caption_messages(t.question) for t in tasks], images, temperature=0.0,
                                 max_new_tokens=48)
    answered: dict[str, list[bool]] = defaultdict(list)
    for task, scene, out in zip(tasks, scenes, answers):
        answered[task.category].append(answer_is_right(task, out[0], scene))
    cases = []   # (category, answer is right, conversation, image): one right and one wrong answer per scene
    for i, (task, image) in enumerate(zip(tasks, images)):
        rng = item_rng(seed, i, HELDOUT_STREAM + "-checks")
        for right in (True, False):
            answer = rng.choice(task.right if right else task.wrong)
            check = CHECK_TEMPLATE.format(question=task.question, answer=answer)
            cases.append((task.category, right, caption_messages(check), image))
    calls_right = _calls_right(generator, cases, check_style)
    checked: dict[str, list[bool]] = defaultdict(list)
    for (category, right, _, _), called in zip(cases, calls_right):
        checked[category].append(bool(called) == right)
    return {"questions": len(tasks), "answer_accuracy": _rates(answered), "check_accuracy": _rates(checked),
            "check_yes_rate": round(float(calls_right.mean()), 4)}


def kit_report(model_cache: Path, images: int = 200, seed: int = 0) -> dict:
    """Caption precision/recall, expert accuracy/agreement and the base judge's skills of the built kit
    (builds what is missing), measured once per build of the roles and cached in `<model_cache>/kit_report.json`."""
    model_cache = Path(model_cache).expanduser()
    folders = build_tiny_models(model_cache, [CAPTION_ROLE, *EXPERT_ROLES])
    stamp = {role: read_marker(folder).get("build_seconds") for role, folder in folders.items()}
    key = {"kit_version": KIT_VERSION, "report": REPORT_VERSION, "builds": stamp, "images": images, "seed": seed}
    cached = model_cache / REPORT
    try:
        report = json.loads(cached.read_text())
        if report.get("key") == key:
            return report
    except (OSError, ValueError):
        pass
    scenes = heldout_scenes(seed, images)
    captions = write_captions(folders[CAPTION_ROLE], scenes)
    pairs = heldout_pairs(seed, scenes, captions)
    votes = {role: expert_votes(folders[role], pairs) for role in EXPERT_ROLES}
    report = {"key": key, "caption": caption_competence(captions, scenes),
              "experts": expert_competence(votes, pairs),
              "base_judge": base_judge_skills(folders[CAPTION_ROLE], scenes, seed),
              "example_caption": captions[0] if captions else None}
    cached.write_text(json.dumps(report, indent=1) + "\n")
    return report
