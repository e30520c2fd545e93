"""The prepare_models job prints exactly one ROLE<TAB>FOLDER line per role on stdout."""
from __future__ import annotations

from pathlib import Path

import pytest

from carevl.kit.tiny import is_built
from ray_jobs import prepare_models


def test_job_builds_config_roles_plus_extras(model_cache, capsys):
    # The preset's models name every role but vlm (the SmolLM2-backed LLaVA); --roles adds it, and a
    # role the config already names (scorer) is listed once.
    folders = prepare_models.main(["--set", f"paths.model_cache={model_cache}", "--roles", "vlm", "scorer",
                                   "--no-report"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "\t" in line]
    expected = ["vlm_micro", "rm_llama", "rm_qwen2", "rm_gemma2", "rm_mistral", "rm_qwen3", "scorer", "vlm"]
    assert [line.split("\t")[0] for line in lines] == expected
    for line in lines:
        role, folder = line.split("\t")
        assert is_built(Path(folder), role) and folders[role] == Path(folder)


def test_job_rejects_an_unknown_role(model_cache, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_models.main(["--set", f"paths.model_cache={model_cache}", "--roles", "rm_bogus"])
    assert exit_info.value.code == 2 and "rm_bogus" in capsys.readouterr().err
