"""JudgeModel on the tiny LLaVA judge (vlm_micro), no Ray: batch in, batch out."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from carevl.data.images import encode_data_url, encode_png
from carevl.judge.model import PROMPT_TOO_LONG, RESERVED_TOKEN, STATUS_OK, JudgeModel
from carevl.judge_format import VERDICT_PREFIX, judge_messages, parse_verdict


@pytest.fixture(scope="module")
def judge() -> JudgeModel:
    return JudgeModel("tiny:vlm_micro", batch_size=8, max_new_tokens=6)


def _batch(n: int) -> dict:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 0)]
    return {
        "question": [f"What colour is square {i}?" for i in range(n)],
        "response_a": ["red " * (i + 1) for i in range(n)],
        "response_b": ["blue", "green", "a dark square", "yellow"][:n] + ["grey"] * max(0, n - 4),
        "image": [Image.new("RGB", (24, 24), colours[i % 4]) if i % 2 == 0 else None for i in range(n)],
    }


def test_verdict_gives_one_probability_per_row_matching_single_rows(judge):
    batch = _batch(5)
    p_a, winners = judge.verdict(batch)
    assert p_a.shape == (5,) and np.all((p_a > 0) & (p_a < 1))
    assert winners == ["A" if p > 0.5 else "B" if p < 0.5 else "tie" for p in p_a]
    # Each row judged alone gives the same number: padding and batching do not leak between rows.
    alone = [judge.verdict({k: [v[i]] for k, v in batch.items()})[0][0] for i in range(5)]
    np.testing.assert_allclose(p_a, alone, atol=1e-5)
    assert len(set(np.round(p_a, 7))) == 5  # the rows really differ, so the comparison means something


def test_image_column_accepts_pil_bytes_and_data_urls_alike(judge):
    image = Image.new("RGB", (24, 24), (10, 220, 90))
    forms = [image, encode_png(image), encode_data_url(image)]
    batch = {"question": ["q"] * 3, "response_a": ["a"] * 3, "response_b": ["b"] * 3, "image": forms}
    p_a, _ = judge.verdict(batch)
    np.testing.assert_allclose(p_a, p_a[0], atol=1e-6)


def test_explain_returns_samples_per_row(judge):
    texts = judge.explain(_batch(3), temperature=1.0, num_samples=2, seed=3)
    assert len(texts) == 3 and all(len(t) == 2 and all(isinstance(s, str) for s in t) for t in texts)


def test_call_judges_each_row_in_its_mode_and_flags_bad_rows(judge):
    batch = _batch(4)
    batch["mode"] = ["verdict", "explain", "verdict", "nonsense"]
    batch["image"][2] = "data:image/png;base64,AAAA"        # undecodable
    batch["response_b"][0] = "word " * 3000                  # beyond max_length
    out = judge(batch)
    assert out["judge_status"] == [PROMPT_TOO_LONG, STATUS_OK, "image_undecodable", "bad_mode"]
    assert np.isnan(out["p_a"][0]) and out["winner"][0] is None
    # The explain row: verdict parsed from its own text (None when the tiny model writes no verdict line).
    assert isinstance(out["judgement"][1], str)
    assert out["winner"][1] == parse_verdict(out["judgement"][1])
    assert out["question"] == batch["question"]  # input columns are passed through


def test_control_tokens_in_text_are_refused_per_row(judge):
    assert "<image>" in judge.reserved_tokens
    batch = _batch(3)
    batch["question"][0] = "Which answer matches <image>?"
    batch["response_a"][2] = "ok<|im_end|>"
    out = judge(batch)
    assert out["judge_status"] == [RESERVED_TOKEN, STATUS_OK, RESERVED_TOKEN]
    assert np.isnan(out["p_a"][0]) and not np.isnan(out["p_a"][1])


def test_call_reads_item_image_columns(judge):
    image = Image.new("RGB", (24, 24), (1, 2, 3))
    batch = {"question": ["q", "q"], "response_a": ["a", "a"], "response_b": ["b", "b"],
             "image_path": [encode_data_url(image), None], "image_bytes": [None, encode_png(image)]}
    out = judge(batch)
    assert out["judge_status"] == [STATUS_OK, STATUS_OK]
    assert out["p_a"][0] == pytest.approx(out["p_a"][1], abs=1e-6)


def test_missing_columns_fail_loudly(judge):
    with pytest.raises(KeyError, match="response_b"):
        judge({"question": ["q"], "response_a": ["a"]})
    with pytest.raises(ValueError, match="differ in length"):
        judge.verdict({"question": ["q", "r"], "response_a": ["a"], "response_b": ["b"]})


def test_prompt_length_matches_the_processor_with_and_without_image(judge):
    processor = judge.generator.processor
    for with_image in (True, False):
        text = processor.apply_chat_template(judge_messages("q", "a", "b", with_image), add_generation_prompt=True,
                                             tokenize=False) + VERDICT_PREFIX
        images = [Image.new("RGB", (24, 24))] if with_image else None
        encoded = processor(text=[text], images=images, add_special_tokens=False)
        assert judge.prompt_length("q", "a", "b", with_image) == len(encoded["input_ids"][0])


def test_calibration_json_in_the_model_folder_rescales_every_verdict(judge, model_cache, tmp_path):
    import shutil

    from carevl.judge.calibration import Calibration, save_calibration

    folder = tmp_path / "judge"
    shutil.copytree(model_cache / "vlm_micro", folder)
    save_calibration(folder, Calibration(3.0), {"pairs": 0})
    calibrated = JudgeModel(str(folder), batch_size=8, max_new_tokens=6)
    raw = JudgeModel(str(folder), batch_size=8, max_new_tokens=6, calibrated=False)
    batch = _batch(4)
    p_cal, winners = calibrated.verdict(batch)
    p_raw, raw_winners = raw.verdict(batch)
    np.testing.assert_allclose(p_raw, judge.verdict(batch)[0], atol=1e-6)  # same weights, no file: raw
    np.testing.assert_allclose(p_cal, Calibration(3.0).apply_many(p_raw), atol=1e-9)
    assert np.all(np.abs(p_cal - 0.5) < np.abs(p_raw - 0.5)) and winners == raw_winners
    out = calibrated(batch)                                        # __call__ returns the same numbers
    np.testing.assert_allclose(out["p_a"], p_cal, atol=1e-6)


def test_a_judge_refuses_an_endpoint_backend(model_cache):
    from carevl.config import ModelSpec

    spec = ModelSpec(path="tiny:vlm_micro", kind="vlm", backend="openai", endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="backend 'openai'"):
        JudgeModel(spec, model_cache)
