"""Captions (paper 3.2): each unique image is described once by the caption model.

The text-only experts judge through these captions. Captions persist in a store shared by every caption
actor and by later runs: append-only Parquet part files (one per batch that produced new captions) under
`<store>/<caption_id>/`, where `caption_id` hashes the model and prompt so a different caption model
never reuses them. Each actor indexes the parts it has read in a small on-disk SQLite file, so memory
stays flat however many images the run sees.
"""
from __future__ import annotations

import hashlib
import posixpath
import sqlite3
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from carevl.config import ModelSpec
from carevl.config.stages import InputLimits
from carevl.curation.columns import ItemStage, active_rows, load_row_images, set_reason
from carevl.data.io import join, resolve, write_table
from carevl.models.backends import make_generator, model_id
from carevl.prompts import CAPTION_PROMPT, caption_messages

CAPTION_FAILED = "caption_failed"


def caption_id(spec: ModelSpec, prompt: str = CAPTION_PROMPT) -> str:
    """Identity of a caption: model, generation settings and prompt."""
    blob = f"{model_id(spec)}|{spec.generation.model_dump_json()}|{prompt}".encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class CaptionStore:
    """image_key -> caption, shared through part files; each instance keeps a local on-disk index."""

    def __init__(self, root: str, caption_id: str):
        self.root = join(root, caption_id)
        self.fs, self.path = resolve(self.root)
        self.fs.create_dir(self.path, recursive=True)
        self._tmp = tempfile.TemporaryDirectory(prefix="carevl-captions-")
        # Ray Data may call an actor from different threads (one at a time): allow that explicitly.
        self.db = sqlite3.connect(Path(self._tmp.name) / "index.sqlite", check_same_thread=False)
        self.db.execute("CREATE TABLE captions (key TEXT PRIMARY KEY, caption TEXT NOT NULL)")
        self._ingested: set[str] = set()

    def refresh(self) -> int:
        """Index part files written since the last refresh (by any actor or run); returns how many."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=False))
        new = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                     and not i.base_name.startswith(".") and i.path not in self._ingested)
        for path in new:
            with self.fs.open_input_file(path) as handle:
                table = pq.read_table(handle, columns=["image_key", "caption"])
            self.db.executemany("INSERT OR IGNORE INTO captions VALUES (?, ?)",
                                zip(table.column(0).to_pylist(), table.column(1).to_pylist()))
            self._ingested.add(path)
        self.db.commit()
        return len(new)

    def _query(self, keys: list[str]) -> dict[str, str]:
        found = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT key, caption FROM captions WHERE key IN ({marks})", chunk))
        return found

    def lookup(self, keys: set[str]) -> dict[str, str]:
        """Stored captions of `keys`; looks for newly written parts only when something is missing."""
        keys = sorted(keys)
        found = self._query(keys)
        if len(found) < len(keys) and self.refresh():
            found = self._query(keys)
        return found

    def add(self, captions: dict[str, str]) -> None:
        """Persist new captions as one part file (published atomically) and index them."""
        if not captions:
            return
        table = pa.table({"image_key": list(captions), "caption": list(captions.values())})
        name = f"part-{uuid.uuid4().hex}.parquet"
        write_table(table, join(self.root, name), "parquet")
        self._ingested.add(posixpath.join(self.path, name))
        self.db.executemany("INSERT OR IGNORE INTO captions VALUES (?, ?)", captions.items())
        self.db.commit()


class Captioner(ItemStage):
    """Adds `caption` (and `caption_new`: True when generated in this call) to every active item."""

    required = ("image_key", "image_path", "image_bytes")

    def __init__(self, spec: ModelSpec, model_cache: str, store_root: str, limits: InputLimits,
                 allow_remote_images: bool = False, request_cache: str | None = None, seed: int = 0):
        self.spec, self.limits, self.allow_remote, self.seed = spec, limits, allow_remote_images, seed
        self.generator = make_generator(spec, Path(model_cache), request_cache)
        self.store = CaptionStore(store_root, caption_id(spec))
        self.store.refresh()
        self.generated = 0

    def process(self, columns: dict[str, list]) -> dict[str, list]:
        n = len(columns["image_key"])
        columns["caption"], columns["caption_new"] = [None] * n, [False] * n
        rows = active_rows(columns)
        known = self.store.lookup({columns["image_key"][i] for i in rows})
        first_row: dict[str, int] = {}
        for i in rows:
            key = columns["image_key"][i]
            if key not in known:
                first_row.setdefault(key, i)
        images = load_row_images(columns, first_row.values(), self.limits, self.allow_remote)
        todo = [(key, i) for key, i in first_row.items() if i in images]
        if todo:
            texts = self.generator.generate([caption_messages()] * len(todo), [images[i] for _, i in todo],
                                            temperature=self.spec.generation.temperature,
                                            max_new_tokens=self.spec.generation.max_new_tokens, seed=self.seed)
            new = {key: out[0] for (key, _), out in zip(todo, texts) if out is not None}
            self.store.add(new)
            self.generated += len(new)
            known.update(new)
        for i in rows:
            key = columns["image_key"][i]
            if key in known:
                columns["caption"][i] = known[key]
                columns["caption_new"][i] = first_row.get(key) == i
            else:
                failed = columns["reason"][first_row[key]] if key in first_row else None
                set_reason(columns, i, failed or CAPTION_FAILED)
        return columns
