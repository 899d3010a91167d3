"""A real local Ray cluster for the Ray-engine tests (two CPUs, no dashboard), started once per session; the engine
joins it instead of starting its own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    import ray  # `make test` installs the ray extra; a missing one fails here, never a silent skip

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
