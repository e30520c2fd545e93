"""The critique sampler's vLLM path (paper preset), built on CPU without running vLLM."""
from carevl.config import load_config
from carevl.models.backends.vllm import engine_kwargs, processor_config, sampling_kwargs
from carevl.models.specs import judge_spec


def test_paper_critic_is_the_sft_model_on_vllm(repo_root):
    config = load_config(repo_root / "configs" / "paper.yaml")
    critic = judge_spec(config, "/runs/sft/model")
    assert (critic.backend, critic.path, critic.kind) == ("vllm", "/runs/sft/model", "vlm")
    engine = engine_kwargs(critic)
    assert engine["limit_mm_per_prompt"] == {"image": 1} and engine["dtype"] == "bfloat16"
    proc = processor_config(critic, critic.path)
    assert proc.model_source == "/runs/sft/model" and proc.batch_size == critic.resources.batch_size
    refine = config.refine
    sampling = sampling_kwargs(critic, refine.temperature, refine.max_new_tokens, refine.num_samples, seed=3)
    assert sampling["n"] == 10 and sampling["temperature"] == 1.0 and sampling["max_tokens"] == 1024


def test_critique_sampler_follows_the_remote_image_setting():
    """An http(s) image is fetched only when `curation.allow_remote_images` allows it."""
    import pyarrow as pa

    from carevl.refine.critiques import CritiqueSampler

    config = load_config(overrides=["models.judge.path=tiny:vlm_micro"])
    batch = pa.table({"pair_id": ["p"], "question": ["q"], "response_a": ["a"], "response_b": ["b"],
                      "label": ["A"], "image_path": ["http://127.0.0.1:9/picture.png"],
                      "image_bytes": pa.array([None], pa.binary())})
    reasons = {}
    for allowed in (False, True):
        sampler = CritiqueSampler(judge_spec(config), str(config.paths.model_cache_dir()), num_samples=1,
                                  temperature=1.0, max_new_tokens=4, seed=0, allow_remote_images=allowed)
        row = sampler(batch).to_pylist()[0]
        assert row["critiques"] == []
        reasons[allowed] = row["skip_reason"]
    assert reasons == {False: "image_remote_not_allowed", True: "image_fetch_failed"}
