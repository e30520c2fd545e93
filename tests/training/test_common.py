"""TRL config pass-through, LoRA placement and vision freezing (no Ray)."""
import pytest
from trl import DPOConfig, SFTConfig

from carevl.config import ConfigError, LoraSpec, load_config
from carevl.models.specs import judge_spec
from carevl.planning.placement import recomputes_activations
from carevl.training import common, sharding
from carevl.training.freeze import freeze_vision, vision_encoder, vision_parameter_names


def test_trainer_keys_pass_through_to_trl(tmp_path):
    args = common.trl_args(SFTConfig, "sft", {"learning_rate": 3e-5, "num_train_epochs": 3, "bf16": False},
                           output_dir=str(tmp_path), use_cpu=True)
    assert (args.learning_rate, args.num_train_epochs) == (3e-5, 3)
    dpo = common.trl_args(DPOConfig, "dpo", {"beta": 0.01, "bf16": False}, output_dir=str(tmp_path))
    assert dpo.beta == 0.01


def test_unknown_trainer_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"sft\.trainer\.learnin_rate: not a field of TRL's SFTConfig"):
        common.trl_args(SFTConfig, "sft", {"learnin_rate": 1e-5}, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"dpo\.trainer\.output_dir: set by the job"):
        common.trl_args(DPOConfig, "dpo", {"output_dir": "x"}, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"sft\.trainer"):
        common.trl_args(SFTConfig, "sft", {"lr_scheduler_type": "no-such-schedule"}, output_dir=str(tmp_path))


def test_presets_trainer_sections_are_valid_trl_configs(tmp_path, repo_root):
    for preset in ("tiny.yaml", "paper.yaml"):
        config = load_config(repo_root / "configs" / preset)
        for cls, name in ((SFTConfig, "sft"), (DPOConfig, "dpo")):
            stage = getattr(config, name)
            stage = stage.model_copy(update={"trainer": {**stage.trainer, "bf16": False}})  # bf16 needs a GPU
            common.training_args(cls, name, stage, str(tmp_path), 0)


def test_sharding_derives_trl_fsdp_fields(tmp_path, repo_root):
    """`sharding: fsdp` alone sets TRL's FSDP fields; the stage's activation checkpointing becomes FSDP's."""
    paper = load_config(repo_root / "configs" / "paper.yaml")
    stage = paper.sft.model_copy(update={"trainer": {**paper.sft.trainer, "bf16": False}})
    args = common.training_args(SFTConfig, "sft", stage, str(tmp_path), 0)
    assert args.fsdp and args.fsdp_config["version"] == 2 and args.fsdp_config["reshard_after_forward"]
    assert args.fsdp_config["activation_checkpointing"] is True and args.activation_checkpointing is False
    assert args.fsdp_plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"
    plain = common.training_args(SFTConfig, "sft", stage.model_copy(update={"sharding": "none"}), str(tmp_path), 0)
    assert not plain.fsdp and plain.activation_checkpointing is True
    for key in ("fsdp", "fsdp_config", "deepspeed"):
        with pytest.raises(ConfigError, match=rf"dpo\.trainer\.{key}: set through dpo\.sharding"):
            common.trl_args(DPOConfig, "dpo", {key: True}, output_dir=str(tmp_path))


def test_planner_assumes_trls_activation_checkpointing():
    """The planner's memory (`carevl.planning`, no TRL import) reads a trainer section's checkpointing as the
    training job does, TRL's default included."""
    for cls in (SFTConfig, DPOConfig):
        for trainer in ({}, {"gradient_checkpointing": False}, {"activation_checkpointing": True,
                                                                 "gradient_checkpointing": False}):
            assert sharding.activation_checkpointing(cls, trainer) is recomputes_activations(trainer)


@pytest.fixture(scope="module")
def micro_model():
    from carevl.models.loading import load_vlm

    config = load_config(overrides=["models.judge.path=tiny:vlm_micro"])
    return load_vlm(judge_spec(config), config.paths.model_cache_dir())[0]


def test_freeze_vision_stops_gradients_only_in_the_encoder(micro_model):
    frozen = freeze_vision(micro_model)
    names = vision_parameter_names(micro_model)
    assert frozen == sum(p.numel() for p in vision_encoder(micro_model).parameters())
    for name, param in micro_model.named_parameters():
        assert param.requires_grad == (name not in names), name
    assert any("multi_modal_projector" in n for n, p in micro_model.named_parameters() if p.requires_grad)


def test_lora_adapters_skip_the_vision_encoder(micro_model):
    from peft import get_peft_model

    names = sorted(vision_parameter_names(micro_model))
    prefix = names[0].split(".vision_tower.")[0] + ".vision_tower"
    peft_model = get_peft_model(micro_model, common.lora_config(LoraSpec(r=4), prefix))
    lora = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora and not any("vision_tower" in n for n in lora)
    assert any("language_model" in n for n in lora)


def test_fake_gpus_train_on_the_cpu(tmp_path):
    """A GPU resource without CUDA (this machine, a fake autoscaler node) is not a device."""
    from carevl.training.devices import cuda_usable

    config = load_config(overrides=["sft.use_gpu=true", "sft.resources_per_worker={CPU: 1, GPU: 1}"])
    fixed = common.fixed_trainer_fields(config.sft, str(tmp_path), 0)
    assert fixed["use_cpu"] is (not cuda_usable())
    assert common.fixed_trainer_fields(load_config().sft, str(tmp_path), 0)["use_cpu"] is True


def test_process_group_backend_follows_the_workers_devices():
    from carevl.training.devices import process_group_backend

    assert process_group_backend([True, True]) == "nccl"
    assert process_group_backend([True, False]) == "gloo"   # one rank without CUDA cannot join NCCL
    assert process_group_backend([]) == "gloo"


def test_failure_budgets_reach_ray_train(tmp_path, repo_root):
    paths = common.TrainPaths.of(str(tmp_path))
    paper = load_config(repo_root / "configs" / "paper.yaml")
    failure = common.run_config("sft", paper.sft, paths).failure_config
    assert (failure.max_failures, failure.max_preemption_failures) == (paper.sft.max_failures, -1)
    assert paper.sft.max_failures > 0 and paper.dpo.max_failures > 0
    tiny = load_config(overrides=["dpo.max_failures=2", "dpo.max_preemption_failures=5"]).dpo
    failure = common.run_config("dpo", tiny, paths).failure_config
    assert (failure.max_failures, failure.max_preemption_failures) == (2, 5)
    with pytest.raises(ConfigError, match="max_failures"):
        load_config(overrides=["sft.max_failures=-2"])
