"""JudgeModel on the vLLM backend (`backend: vllm`, vLLM's CPU build) gives the verdicts of the
transformers backend, so the scoring job's actor runs either (`make test-vllm`). The judge is text-only
(SmolLM2-135M-Instruct): vLLM's vision models need torchvision, which does not load beside the CPU torch."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (make test-vllm runs these tests)")

from carevl.config import InputLimits, load_config  # noqa: E402
from carevl.judge.model import JudgeModel  # noqa: E402
from carevl.scoring.judge import ScoreJudge  # noqa: E402
from carevl.scoring.rows import ROW_SCHEMA, normalize_row  # noqa: E402
from carevl.testing.vllm_kit import text_lm_spec, tier_models  # noqa: E402

pytestmark = pytest.mark.vllm

PAIRS = {"question": ["What colour is the square?", "How many circles are there?", "Is the sky green?"],
         "response_a": ["It is red.", "Two.", "No, it is blue."],
         "response_b": ["It is blue.", "There are two circles, one large and one small.", "Yes."]}


@pytest.fixture(scope="module")
def folder():
    return tier_models(load_config().paths.model_cache_dir())["scorer"]


def test_vllm_verdicts_match_transformers_and_score_groups(folder):
    cache = load_config().paths.model_cache_dir()
    reference, _ = JudgeModel(text_lm_spec(folder, "transformers"), cache).verdict(PAIRS)
    on_vllm = ScoreJudge(text_lm_spec(folder, "vllm"), str(cache), "bradley_terry", limits=InputLimits())
    assert on_vllm.judge.device == "vllm"
    p_a, _ = on_vllm.judge.verdict(PAIRS)
    np.testing.assert_allclose(p_a, reference, atol=2e-3)
    rows = [{"question": q, "response_a": a, "response_b": b}
            for q, a, b in zip(PAIRS["question"], PAIRS["response_a"], PAIRS["response_b"])]
    rows.append({"question": "Which is right?", "candidates": ["Yes.", "No.", "Maybe."]})
    records = pa.Table.from_pylist([normalize_row(r, "u", i, None, InputLimits(), "bradley_terry")
                                    for i, r in enumerate(rows)], schema=ROW_SCHEMA)
    out = on_vllm(records).to_pylist()
    assert out[0]["p_a_ab"] == pytest.approx(reference[0], abs=2e-3)
    assert out[3]["reason"] is None and len(out[3]["rewards"]) == 3 and None not in out[3]["rewards"]
