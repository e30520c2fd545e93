"""Curation stages called directly on dict batches (no cluster): the same objects Ray Data runs."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from carevl.config import REPO_ROOT, load_config
from carevl.config.stages import InputLimits
from carevl.curation.candidates import CandidateCheck, CandidateGenerator
from carevl.curation.captions import Captioner, CaptionStore
from carevl.curation.experts import ExpertScorer
from carevl.prompts import expert_messages
from carevl.curation.outputs import write_outputs
from carevl.curation.pipeline import expert_groups
from carevl.curation.strong_judge import StrongJudge, read_judgement
from carevl.ledger import STAGING_DIR
from carevl.models.backends.transformers import token_budget_chunks
from carevl.ray_utils import group_resources, pool_args

from tests.curation.conftest import png_bytes

LIMITS = InputLimits()


@pytest.fixture(scope="module")
def config():
    return load_config(overrides=["models.vlm.path=tiny:vlm_micro", "models.vlm.generation.max_new_tokens=6"])


def _item_batch(n_images: int = 2, repeat: int = 2) -> dict:
    images = [png_bytes(colour=(40 * i, 200, 10)) for i in range(n_images)]
    rows = [images[i % n_images] for i in range(n_images * repeat)]
    return {
        "item_id": [f"i{k}" for k in range(len(rows))],
        "image_path": [None] * len(rows),
        "image_bytes": rows,
        "image_key": [f"key-{images.index(b)}" for b in rows],
        "question": ["What is shown?"] * len(rows),
        "reason": [None] * len(rows),
    }


# ------------------------------------------------------------------------------------------ captions

def test_caption_store_shares_captions_between_instances(tmp_path):
    a, b = CaptionStore(str(tmp_path), "cap1"), CaptionStore(str(tmp_path), "cap1")
    a.add({"k1": "a red square"})
    assert b.lookup({"k1", "k2"}) == {"k1": "a red square"}   # b finds a's part file when it misses
    assert CaptionStore(str(tmp_path), "cap2").lookup({"k1"}) == {}  # another caption model: not reused


def test_captioner_captions_each_unique_image_once_and_reuses_the_store(config, tmp_path):
    spec = config.models["vlm"]
    captioner = Captioner(spec, str(config.paths.model_cache_dir()), str(tmp_path), LIMITS)
    batch = _item_batch(n_images=2, repeat=3)
    batch["reason"][5] = "already_quarantined"
    out = captioner(batch).to_pydict()
    assert captioner.generated == 2
    assert out["caption_new"] == [True, True, False, False, False, False]
    assert out["caption"][0] == out["caption"][2] == out["caption"][4] and out["caption"][0] is not None
    assert out["caption"][5] is None and out["reason"][5] == "already_quarantined"
    again = Captioner(spec, str(config.paths.model_cache_dir()), str(tmp_path), LIMITS)
    assert again(batch).to_pydict()["caption"] == out["caption"] and again.generated == 0


def test_captioner_quarantines_an_unreadable_image(config, tmp_path):
    captioner = Captioner(config.models["vlm"], str(config.paths.model_cache_dir()), str(tmp_path), LIMITS)
    batch = _item_batch(n_images=1, repeat=2)
    batch["image_bytes"] = [b"garbage", b"garbage"]
    out = captioner(batch).to_pydict()
    assert out["reason"] == ["image_undecodable", "image_undecodable"]


def test_stage_refuses_a_batch_without_its_columns(config, tmp_path):
    captioner = Captioner(config.models["vlm"], str(config.paths.model_cache_dir()), str(tmp_path), LIMITS)
    with pytest.raises(KeyError, match="image_key"):
        captioner({"question": ["q"]})


# ------------------------------------------------------------------------------------------- experts

def test_token_budget_chunks_cover_every_row_once():
    lengths = [5, 50, 7, 300, 8, 49]
    chunks = token_budget_chunks(lengths, budget=100)
    assert sorted(i for c in chunks for i in c) == list(range(6))
    for chunk in chunks:
        assert len(chunk) == 1 or max(lengths[i] for i in chunk) * len(chunk) <= 100


def test_expert_scorer_scores_each_distinct_response_once(config):
    experts = {name: config.models[name] for name in ("rm_llama", "rm_gemma2")}
    scorer = ExpertScorer(experts, str(config.paths.model_cache_dir()))
    batch = {"question": ["q1", "q2", "q3"], "caption": ["c1", "c2", "c3"],
             "responses": [["a", "b", "a "], ["x", "y"], ["z", "w"]],
             "reason": [None, None, "quarantined"]}
    out = scorer(batch).to_pydict()
    for name, model in scorer.scorers.items():
        assert model.forward_rows == 4               # a, b for item 1; x, y for item 2; nothing for item 3
        assert out[f"scored__{name}"] == [2, 2, 0]
        s = out[f"score__{name}"]
        assert len(s[0]) == 3 and s[0][0] == s[0][2]  # the duplicate response shares its first copy's score
        assert s[2] is None


def test_expert_templates_differ_per_model(config):
    scorer = ExpertScorer({n: config.models[n] for n in ("rm_llama", "rm_gemma2")},
                          str(config.paths.model_cache_dir()))
    texts = {n: m.render(expert_messages("a cat", "What animal?", "A cat.")) for n, m in scorer.scorers.items()}
    assert "<start_of_turn>" in texts["rm_gemma2"] and "<|start_header_id|>" in texts["rm_llama"]
    assert all("a cat" in t and "What animal?" in t for t in texts.values())


def test_colocated_experts_share_one_pool_with_summed_gpus():
    paper = load_config(REPO_ROOT / "configs" / "paper.yaml")
    groups = expert_groups(paper)
    assert groups["group:rm8b"] == ["skywork-llama31-8b-v02", "qrm-llama31-8b"]
    assert len(groups) == 4
    resources = group_resources([paper.models[m] for m in groups["group:rm8b"]])
    assert resources.num_gpus == 1.0 and resources.batch_size == 32
    args = pool_args(paper.models["inf-orm-70b"].resources, "vllm")
    assert "num_gpus" not in args              # tensor parallel: vLLM places its own GPU workers
    assert (args["compute"].min_size, args["compute"].max_size) == (1, 2)


# ------------------------------------------------------------------------------------- strong judge

def test_read_judgement_is_strict():
    assert read_judgement("Verdict: B\nExplanation: more precise") == ("B", "more precise", "ok")
    assert read_judgement("I think B is better") == (None, "I think B is better", "unparseable")
    assert read_judgement(None) == (None, None, "error")


def test_local_strong_judge_fills_every_pair(config):
    spec = config.models["vlm"]
    judge = StrongJudge(spec, str(config.paths.model_cache_dir()), LIMITS)
    batch = _item_batch(n_images=1, repeat=2)
    batch.update(responses=[["r1", "r2", "r3"], ["s1", "s2"]], pairs_a=[[0, 0, 1], [0]], pairs_b=[[1, 2, 2], [1]])
    out = judge(batch).to_pydict()
    assert [len(c) for c in out["judge_choices"]] == [3, 1]
    for choices, statuses in zip(out["judge_choices"], out["judge_statuses"]):
        for choice, status in zip(choices, statuses):
            assert status in ("ok", "unparseable") and (choice in ("A", "B")) == (status == "ok")


# ---------------------------------------------------------------------------------------- candidates

def test_candidates_generated_then_checked(config):
    spec = config.models["vlm"]
    generator = CandidateGenerator("vlm", spec, [0.0, 1.0], str(config.paths.model_cache_dir()), LIMITS)
    batch = _item_batch(n_images=1, repeat=2)
    batch.update(needs_candidates=[True, False], responses=[[], ["kept", "as is"]], response_models=[[], None])
    out = generator(batch).to_pydict()
    assert len(out["responses"][0]) == 2 and out["response_models"][0] == ["vlm@t=0", "vlm@t=1"]
    assert out["responses"][1] == ["kept", "as is"]
    checked = CandidateCheck(LIMITS, judge_from_column=True)(out).to_pydict()
    if checked["reason"][0] is None:
        assert checked["pairs_a"][0] == [0] and checked["judge_statuses"][0] == ["missing"]
    else:  # the random micro model may well say the same (or nothing) twice
        assert checked["reason"][0] in ("too_few_distinct_responses", "empty_response")


def test_candidate_check_quarantines_identical_answers():
    batch = {"needs_candidates": [True], "responses": [["same", "same"]], "reason": [None]}
    assert CandidateCheck(LIMITS, True)(batch).to_pydict()["reason"] == ["too_few_distinct_responses"]


def test_candidate_check_applies_every_response_rule_of_validation():
    """Generated candidates obey the same rules as shipped responses, `max_responses` included."""
    limits = InputLimits(max_responses=3, max_response_chars=20)
    batch = {"needs_candidates": [True, True, True, True],
             "responses": [["a", "b", "c", "d"], ["fine", "x" * 21], ["fine", " "], ["one", "two", "three"]],
             "reason": [None, None, None, None]}
    out = CandidateCheck(limits, True)(batch).to_pydict()
    assert out["reason"] == ["too_many_responses", "response_too_long", "empty_response", None]
    assert out["pairs_a"][3] == [0, 0, 1] and out["pairs_b"][3] == [1, 2, 2]


# ------------------------------------------------------------------------------------------- outputs

def test_write_outputs_splits_pairs_and_quarantine_per_unit(tmp_path):
    experts = ["e1", "e2", "e3"]
    batch = {
        "unit_id": ["u1", "u1", "u2"], "row_index": [0, 1, 2], "reason": [None, "empty_question", None],
        "row_json": [None, '{"item_id": "bad"}', None], "item_id": ["a", "bad", "c"],
        "image_path": ["/x.png", None, "/y.png"], "image_bytes": [None, None, None], "question": ["q", "", "q"],
        "category": [None, None, "c"], "caption": ["cap", None, "cap"], "caption_new": [True, False, False],
        "responses": [["r0", "r1", "r2"], None, ["s0", "s1"]],
        "pairs_a": [[0, 0, 1], None, [0]], "pairs_b": [[1, 2, 2], None, [1]],
        "judge_choices": [["A", "B", None], None, ["B"]], "judge_statuses": [["ok", "ok", "missing"], None, ["ok"]],
        "judge_explanations": [["x", "y", None], None, ["z"]], "judge_cached": [0, 0, 0],
        "score__e1": [[3.0, 1.0, 2.0], None, [0.0, 1.0]], "score__e2": [[3.0, 1.0, 2.0], None, [0.0, 1.0]],
        "score__e3": [[3.0, 1.0, 1.0], None, [1.0, 0.0]],
        "scored__e1": [3, 0, 2], "scored__e2": [3, 0, 2], "scored__e3": [3, 0, 2],
    }
    receipts = write_outputs(batch, run_dir=str(tmp_path), experts=experts, tau=2, rows_per_file=2).to_pylist()
    by_unit = {r["unit_id"]: r for r in receipts}
    assert by_unit["u1"]["rows"] == 2 and by_unit["u2"]["rows"] == 1
    files = json.loads(by_unit["u1"]["files"])
    rows = {f["class"]: [] for f in files}
    for f in files:
        assert f["path"].startswith(str(tmp_path / STAGING_DIR))
        rows[f["class"]] += pq.read_table(f["path"]).to_pylist()
    # u1 pairs: (0,1) votes 3:0 judge A -> high; (0,2) 3:0 judge B -> low judge_disagrees, label A;
    # (1,2) e1,e2 vote B, e3 ties -> 0:2 no judge -> low no_judge, label B.
    assert [p["pair_id"] for p in rows["high"]] == ["a:0-1"]
    low = {p["pair_id"]: (p["low_reason"], p["label"]) for p in rows["low"]}
    assert low == {"a:0-2": ("judge_disagrees", "A"), "a:1-2": ("no_judge", "B")}
    assert rows["quarantine"] == [{"item_id": "bad", "reason": "empty_question", "row_json": '{"item_id": "bad"}',
                                   "row_index": 1}]
    stats = json.loads(by_unit["u1"]["stats"])
    assert stats["input_rows"] == 2 and stats["items"] == 1 and stats["quarantined"] == 1
    assert stats["vote_histogram"] == {"3:0": 2, "0:2": 1}
    assert stats["expert_judge_agreement"]["e3"] == [1, 2]
