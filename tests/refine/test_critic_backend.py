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
