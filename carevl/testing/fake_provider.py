"""Ray's fake multi-node provider with one change: every instance it launches gets a temp directory of
its own, as a real instance has a disk of its own.

Ray's provider starts each instance in-process (`ray._private.node.Node`) with no temp directory, so
every instance takes the head's, and all of them share one `<session>/runtime_resources` folder.
Ray's working_dir plugin unpacks a job's working directory there, with overwrite, on each node the job
reaches for the first time: an instance launched while the job runs deletes the folder that the
workers of the other instances run in and import from. Those workers then fail in their constructors
(`os.getcwd()` raises FileNotFoundError from inside an import). On a real cloud the folders are on
different disks and nothing is shared. Seen under autoscaler v1, which launches spare instances while
the pools' actors are starting.

The provider builds the instance's `RayParams` inline, with no way to pass a temp directory; the
launch below swaps, for its own duration and under a lock, the `RayParams` it looks up for one with
the instance's temp directory set. Everything else is Ray's.
"""
from __future__ import annotations

import itertools
import os
import threading
from typing import Any
from unittest import mock

import ray._private.parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

_LAUNCH = threading.Lock()   # the swap is process-wide: one launch at a time


class OwnDiskFakeProvider(FakeMultiNodeProvider):
    """`FakeMultiNodeProvider`; the provider config's `instance_temp_root` (required) holds one temp
    directory per launched instance (`instance.<n>`)."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str):
        super().__init__(provider_config, cluster_name)
        self._temp_root = provider_config["instance_temp_root"]
        self._launched = itertools.count()

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        temp_dir = os.path.join(self._temp_root, f"instance.{next(self._launched)}")
        os.makedirs(temp_dir, exist_ok=True)
        base = ray._private.parameter.RayParams

        class InstanceParams(base):
            def __init__(self, **kwargs):
                super().__init__(**{**kwargs, "temp_dir": temp_dir})

        with _LAUNCH, mock.patch.object(ray._private.parameter, "RayParams", InstanceParams):
            super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
