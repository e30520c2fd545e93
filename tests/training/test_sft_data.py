"""SFT conversation builder (paper 3.3): seeded A/B swap with a consistent target."""
from carevl.judge_format import (format_judgement, parse_explanation, parse_verdict, swap_answer_mentions,
                                 swap_judgement)
from carevl.training.sft_data import (
    LABEL_MISMATCH, NO_EXPLANATION, NO_LABEL, NOT_HIGH, sft_conversation, sft_conversations,
    swap_order,
)


def _row(i: int, label: str = "A", **kw) -> dict:
    row = {
        "pair_id": f"item{i}:0-1", "question": f"What is shown in picture {i}?",
        "response_a": f"first answer {i}", "response_b": f"second answer {i}",
        "judge_choice": label, "judge_explanation": f"Answer {label} names the object correctly.",
        "confidence": "high", "label": label,
    }
    row.update(kw)
    return row


def _user_text(example: dict) -> str:
    return example["prompt"][-1]["content"][-1]["text"]


def _target(example: dict) -> str:
    return example["completion"][0]["content"][0]["text"]


def test_swap_is_seeded_and_roughly_fair():
    ids = [f"item{i}:0-1" for i in range(400)]
    first = [swap_order(7, p) for p in ids]
    assert first == [swap_order(7, p) for p in ids]
    assert 150 < sum(first) < 250
    assert first != [swap_order(8, p) for p in ids]


def test_target_follows_the_better_answer_through_the_swap():
    seen = set()
    for i in range(40):
        for label in ("A", "B"):
            row = _row(i, label)
            example, reason = sft_conversation(row, seed=0)
            assert reason is None
            better = row["response_a"] if label == "A" else row["response_b"]
            verdict = parse_verdict(_target(example))
            text = _user_text(example)
            shown_a = text.split("[Answer A]\n")[1].split("\n[End of Answer A]")[0]
            shown_b = text.split("[Answer B]\n")[1].split("\n[End of Answer B]")[0]
            assert (shown_a if verdict == "A" else shown_b) == better
            # The explanation names the same letter as the verdict after any swap.
            assert parse_explanation(_target(example)).startswith(f"Answer {verdict} ")
            seen.add(example["swapped"])
    assert seen == {True, False}


def test_prompt_has_image_placeholder_and_system_turn():
    example, _ = sft_conversation(_row(1), seed=0)
    assert example["prompt"][0]["role"] == "system"
    assert example["prompt"][1]["content"][0] == {"type": "image"}
    assert example["completion"][0]["role"] == "assistant"


def test_unusable_rows_are_counted_with_reasons():
    rows = [_row(0), _row(1, confidence="low"), _row(2, label=None), _row(3, judge_choice="B"),
            _row(4, judge_explanation="  ")]
    examples, skipped = sft_conversations(rows, seed=0)
    assert [e["pair_id"] for e in examples] == ["item0:0-1"]
    assert skipped == {NOT_HIGH: 1, NO_LABEL: 1, LABEL_MISMATCH: 1, NO_EXPLANATION: 1}


def test_swap_answer_mentions():
    assert swap_answer_mentions("Answer A is right; response B errs.") == "Answer B is right; response A errs."
    assert swap_answer_mentions("It does answer a question.") == "It does answer a question."


def test_training_examples_follow_the_remote_image_setting(tmp_path):
    """Rows whose image is an http(s) URL are fetched only when remote images are allowed."""
    from collections import Counter

    import pyarrow as pa
    import pyarrow.parquet as pq

    from carevl.config import InputLimits
    from carevl.training.examples import iter_examples

    rows = [{**_row(0), "image_path": "http://127.0.0.1:9/picture.png", "image_bytes": None},
            {**_row(1), "image_path": None, "image_bytes": _png()}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet")
    for allowed, reason in ((False, "image_remote_not_allowed"), (True, "image_fetch_failed")):
        counts = Counter()
        examples = list(iter_examples(str(tmp_path), lambda row: sft_conversation(row, seed=0), InputLimits(),
                                      counts, allow_remote=allowed))
        assert [e["pair_id"] for e in examples] == [rows[1]["pair_id"]]
        assert counts == Counter({"rows": 2, "examples": 1, f"skipped:{reason}": 1})


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_both_orders_shows_each_pair_twice_with_opposite_verdicts():
    rows = [_row(i, label="A" if i % 2 else "B") for i in range(6)]
    examples, skipped = sft_conversations(rows, seed=0, both_orders=True)
    assert not skipped and len(examples) == 2 * len(rows)
    for plain, swapped in zip(examples[::2], examples[1::2]):
        assert plain["pair_id"] == swapped["pair_id"] and (plain["swapped"], swapped["swapped"]) == (False, True)
        verdicts = [parse_verdict(e["completion"][0]["content"][0]["text"]) for e in (plain, swapped)]
        assert sorted(verdicts) == ["A", "B"]
        texts = [e["prompt"][1]["content"][-1]["text"] for e in (plain, swapped)]
        assert texts[0] != texts[1]   # the answers really are shown in the other order


def test_a_judgement_retold_for_the_swapped_order_still_picks_the_same_answer():
    text = format_judgement("A", "Answer A counts two circles, while Answer B counts three.")
    swapped = swap_judgement(text)
    assert parse_verdict(swapped) == "B"
    assert parse_explanation(swapped) == "Answer B counts two circles, while Answer A counts three."
    assert swap_judgement(swapped) == text
    # No verdict line: only the mentions change (the critique stays unparseable, as it was).
    assert swap_judgement("I think Answer A is right.") == "I think Answer B is right."
    assert parse_verdict(swap_judgement("I think Answer A is right.")) is None
