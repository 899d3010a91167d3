"""A real local Ray cluster for the Ray-engine tests (two CPUs, no dashboard), started per test module and shut down
after it, so no idle cluster lingers through the rest of the suite; the engine joins it instead of starting its
own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

# Test modules elsewhere import `load_jsonl` and `DATA` "from conftest": the tests are not a package, so whichever
# conftest pytest imported last answers to that name, and this one does too (both come from tests/support.py).
from support import DATA, load_jsonl  # noqa: F401


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    import ray  # `make test` installs the ray extra; a missing one fails here, never a silent skip

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
