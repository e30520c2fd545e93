"""A small byte-level BPE tokenizer trained on this machine for the tiny random models.

The training corpus is generated from word lists that cover what the pipeline feeds these models
(questions about coloured shapes, candidate answers, the judge prompt), so common words become single
tokens; byte-level fallback keeps every other string encodable.
"""
from __future__ import annotations

import random

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from carevl import judge_format
from carevl.data.captions import grid_caption
from carevl.data.shapes import make_scene
from carevl.prompts import CAPTION_PROMPT

# Every chat-format marker any tiny model's template uses; all live in the one shared vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>",
    "<s>", "</s>", "[INST]", "[/INST]",
]

_COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink", "brown"]
_SHAPES = ["circle", "square", "triangle", "star", "rectangle", "ellipse", "diamond", "cross"]
_PLACES = ["top left", "top right", "bottom left", "bottom right", "centre", "left side", "right side"]
_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]
# Everyday English words, so free text (captions, explanations, critiques) also tokenizes compactly.
_COMMON = """
the a an and or but of to in on at by for with from about into over under between behind above below
is are was were be been being has have had do does did can could will would should may might must
not no yes very more most less many much few some any all each every both either neither other same
this that these those there here it its they them their we our you your he she his her i me my
image picture photo scene object objects shape shapes colour colours color size position count number
left right top bottom middle centre center corner edge side background foreground near far next beside
large small big little tall short wide narrow round sharp bright dark light pale deep thin thick
answer answers question questions response responses judge judgement verdict explanation reason because
correct incorrect wrong right accurate inaccurate true false better worse best worst good bad helpful
detail details describe describes described description caption captions mention mentions mentioned
hallucination hallucinated invented missing extra claim claims claimed evidence visible shown shows
first second third last one two three four five six seven eight nine ten zero several multiple single
people person man woman child dog cat car tree house table chair book cup window door road sky water
sun cloud grass flower bird ball box bag phone computer screen sign text word letter line circle square
red green blue yellow purple orange black white grey gray pink brown gold silver
see look looks looking appear appears seem seems contain contains containing include includes including
compare compared comparison consider considering choose chose chosen prefer preferred score scores rated
because therefore however although while when where which who what why how whether than then also only
just still even already again always never often sometimes usually quite rather almost nearly exactly
""".split()

_TEMPLATES = [
    "How many {shape}s are in the image?",
    "What colour is the {shape} in the {place}?",
    "There are {n} {colour} {shape}s in the picture.",
    "The {shape} in the {place} is {colour}.",
    "I can see a {colour} {shape} near the {place} of the image.",
    "Is there a {colour} {shape} in the {place}? Yes, there is.",
    "No, the {shape} is not {colour}; it is {colour2}.",
    "The image shows {n} shapes: a {colour} {shape} and a {colour2} {shape2}.",
    "Answer A is more accurate because it names the {colour} {shape} correctly.",
    "Answer B describes a {colour2} {shape2} that is not in the image, which is a hallucination.",
    "Score: {n} out of 10. The critique is correct and helpful.",
    "Please describe the image in detail, including every object, its colour and its position.",
    "The caption says the picture contains a {colour} {shape} on a white background.",
]


def training_corpus(num_lines: int = 6000, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences about shapes and free word sequences, plus the judge and
    caption prompts and grid captions."""
    rng = random.Random(seed)
    lines = [judge_format.SYSTEM_PROMPT, judge_format.USER_TEMPLATE, CAPTION_PROMPT,
             judge_format.format_judgement("A", "The first answer matches the image.")]
    # Grid captions (the tiny caption model's output), so each slot word is one token.
    lines += [grid_caption(make_scene(rng, 64)) for _ in range(num_lines // 20)]
    for _ in range(num_lines):
        template = rng.choice(_TEMPLATES)
        lines.append(template.format(
            shape=rng.choice(_SHAPES), shape2=rng.choice(_SHAPES), place=rng.choice(_PLACES),
            colour=rng.choice(_COLOURS), colour2=rng.choice(_COLOURS), n=rng.choice(_NUMBERS),
        ))
        words = rng.choices(_COMMON, k=rng.randint(6, 16))
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ",", ";"])
                     + f" {rng.randint(0, 999)}")
    return lines


def train_bpe_tokenizer(vocab_size: int = 3000, seed: int = 0) -> Tokenizer:
    """Train a byte-level BPE tokenizer (GPT-2 style) with the chat special tokens reserved first."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(seed=seed), trainer=trainer)
    return tokenizer
