"""Progress bars on stderr (tqdm): rate and ETA on a terminal, silent when stderr is not a TTY or with -q."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(*, total: int | None, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar; ``disable=None`` makes tqdm itself stay quiet when stderr is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        disable=None if enabled else True,
        mininterval=0.5,
    )
