"""Progress bars: `tqdm.auto` (a widget in Jupyter, text in a terminal) that callers can turn
off, and that `TQDM_DISABLE=1` (CI, papermill runs) turns off everywhere."""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(iterable, disable=off, **kwargs)
