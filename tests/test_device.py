"""Device choice and the allocator setting used by training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synctalk_lib import device

MB = 2**20


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / MB


def _touch_and_free(mb: int) -> None:
    block = np.ones(mb * MB, dtype=np.uint8)  # malloc'd and every page written
    del block


def test_pick_device_defaults_and_overrides():
    auto = device.pick_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device.pick_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_is_an_error():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device.pick_device("cuda")


@pytest.mark.skipif(device._glibc() is None, reason="the allocator setting is glibc only")
def test_freed_memory_stays_inside_and_is_returned_after():
    before = _rss_mb()
    with device.reuse_freed_memory():
        with device.reuse_freed_memory():  # nested: the inner exit must not restore
            _touch_and_free(256)
        _touch_and_free(256)
        inside = _rss_mb()
    after = _rss_mb()
    assert inside - before > 200, "a freed 256 MB block should stay resident inside the block"
    assert after - before < 64, "leaving the block should give the memory back"
    _touch_and_free(256)
    assert _rss_mb() - before < 64, "outside the block, big blocks are unmapped on free again"
