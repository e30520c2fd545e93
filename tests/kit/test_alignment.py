"""The answer-checking instructions of the micro LLaVA's alignment: the target says "right" exactly
when the checked answer states a right claim, and names the object an answer invents."""
from __future__ import annotations

import random

import pytest

from carevl.data.shapes import make_scene
from carevl.data.synth import CATEGORIES, describe, make_task
from carevl.kit.alignment import CHECK_TEMPLATE, AlignmentRecipe, answer_check
from carevl.kit.competence import answer_is_right, restated_verdict


def test_answer_checks_are_true_to_the_scene():
    verdicts, inventions = [], 0
    for i in range(300):
        rng = random.Random(i)
        scene = make_scene(rng, 64)
        task = make_task(rng, scene, CATEGORIES)
        text, target = answer_check(scene, task, rng)
        answer = text.split("[Answer]\n", 1)[1].split("\n[End of Answer]", 1)[0]
        assert text == CHECK_TEMPLATE.format(question=task.question, answer=answer)
        right = any(claim in answer for claim in task.right)
        wrong = any(claim in answer for claim in task.wrong)
        assert right != wrong, (answer, task.right, task.wrong)
        assert target.startswith("Yes, it is right." if right else "No, it is wrong."), (answer, target)
        if "which the image does not show" in target:
            invented = target.split("It mentions ", 1)[1].split(",", 1)[0].split(" ", 1)[1]  # article dropped
            assert invented in answer and invented not in scene_objects(scene)
            inventions += 1
        verdicts.append(right)
    assert 0.4 < sum(verdicts) / len(verdicts) < 0.6   # right and wrong answers in about equal parts
    assert 30 < inventions < 120                       # about a quarter of answers invent an object


def scene_objects(scene) -> set[str]:
    return {f"{shape.color} {shape.kind}" for shape in scene.shapes}


def test_the_base_skill_probe_marks_answers_as_the_scene_says():
    """`answer_is_right` (the kit report's answer accuracy) accepts every right phrasing, rejects every
    wrong one, and reads descriptions by their objects, so a reordered description still counts."""

    described = 0
    for i in range(200):
        rng = random.Random(1000 + i)
        scene = make_scene(rng, 64)
        task = make_task(rng, scene, CATEGORIES)
        assert all(answer_is_right(task, f" {a} ", scene) for a in task.right), task
        assert not any(answer_is_right(task, a, scene) for a in task.wrong), task
        if task.category == "hallucination":
            listing = describe(scene)[len("The image shows "):-1]
            parts = listing.replace(" and ", ", ").split(", ")
            assert answer_is_right(task, "I see " + ", ".join(reversed(parts)) + ".", scene)
            described += 1
    assert described > 20


def test_restating_checks_end_with_the_verdict_the_probe_reads():
    """The "restate" check style (benchmarks/base_skills.py) restates the answer's claim and the image's
    fact, then ends with a verdict that `restated_verdict` reads as right exactly when the answer is."""

    seen = set()
    for i in range(200):
        rng = random.Random(5000 + i)
        scene = make_scene(rng, 64)
        task = make_task(rng, scene, CATEGORIES)
        text, target = answer_check(scene, task, rng, "restate")
        answer = text.split("[Answer]\n", 1)[1].split("\n[End of Answer]", 1)[0]
        right = any(claim in answer for claim in task.right)
        assert target.startswith("The answer says: ") and f"Looking at the image, {task.fact}." in target
        assert restated_verdict(target) is right, (answer, target)
        seen.add(right)
    assert seen == {True, False}
    assert restated_verdict("The answer says: It is red.") is None
    with pytest.raises(ValueError, match="check style"):
        answer_check(scene, task, rng, "maybe")
    with pytest.raises(ValueError, match="instruction_kinds"):
        AlignmentRecipe(instruction_kinds=("caption", "essay"))


def test_instruction_examples_keep_to_the_recipes_question_categories(model_cache):
    """`AlignmentRecipe.categories` (benchmarks/base_skills.py --categories) limits the question and
    check examples (a colour question falls back to counting when no shape can be named); the kit's
    recipe keeps every category."""
    from transformers import AutoProcessor

    from carevl.kit.alignment import instruction

    processor = AutoProcessor.from_pretrained(model_cache / "vlm_micro")
    openings = {"What color is the": "color", "How many": "counting", "Is there": "position",
                "Describe": "hallucination", "What shapes": "hallucination"}

    def category(prompt: str) -> str:
        return next(c for opening, c in openings.items() if f"\n{opening}" in prompt or f"Question: {opening}" in prompt)

    for kind in ("question", "check"):
        limited, every = [], []
        for i in range(60):
            scene = make_scene(random.Random(9000 + i), 64)
            limited.append(category(instruction(processor, scene, random.Random(i), "", kind, categories=("color",))[0]))
            every.append(category(instruction(processor, scene, random.Random(i), "", kind)[0]))
        assert set(limited) <= {"color", "counting"} and limited.count("color") > 40, (kind, limited)
        assert set(every) == set(CATEGORIES), (kind, every)
    assert AlignmentRecipe().categories == CATEGORIES
    with pytest.raises(ValueError, match="categories"):
        AlignmentRecipe(categories=("colour",))


def test_multiple_choice_targets_name_the_right_option():
    """The "choice" instruction kind (measured, not in the kit's mix): the target letter is the option
    holding a right answer, and the right option sits at A and at B about equally often."""
    from carevl.kit.alignment import answer_choice

    letters = []
    for i in range(300):
        rng = random.Random(7000 + i)
        scene = make_scene(rng, 64)
        task = make_task(rng, scene, CATEGORIES)
        text, letter = answer_choice(task, rng)
        options = dict(line.split(". ", 1) for line in text.splitlines()[1:3])
        assert set(options) == {"A", "B"} and text.startswith(f"Question: {task.question}\n")
        assert options[letter] in task.right and options["B" if letter == "A" else "A"] in task.wrong, (text, letter)
        letters.append(letter)
    assert 0.4 < letters.count("A") / len(letters) < 0.6
