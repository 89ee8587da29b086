"""Keep native libraries' set-up chatter off the user's terminal.

MediaPipe's C++ graph (absl logging, TFLite) writes lines such as `W0000 00:00:… Feedback
manager requires a model with a single signature inference` and `INFO: Created TensorFlow
Lite XNNPACK delegate` straight to file descriptor 2 when a graph first runs. absl logs
everything before `absl::InitializeLog()` (which the mediapipe wheel never calls) to stderr,
and no environment variable (GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL) reaches it, so the only
lever is the descriptor itself: `native_chatter_hidden` points fd 2 at a temp file for a block,
then passes on every line that is not such chatter (errors, Python's own output) and logs the
hidden ones at debug level.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

log = logging.getLogger(__name__)

# absl/glog info and warning lines (I/W + MMDD or 0000 + time), TFLite's INFO lines and
# absl's note about its own initialisation; E/F (errors, fatal) lines always pass
CHATTER = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:\d\d[.\d]* +\d+ \S+:\d+\]|INFO: |WARNING: All "
                     rb"log messages before absl::InitializeLog\(\) is called)")


@contextlib.contextmanager
def native_chatter_hidden() -> Iterator[None]:
    """Hide native info/warning lines written to fd 2 during the block (see the module)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some embedded interpreters): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().splitlines(keepends=True):
                if CHATTER.match(line):
                    log.debug("native: %s", line.decode("utf-8", "replace").rstrip())
                else:
                    os.write(2, line)
