"""CUDA run of the compression path (``make test-gpu``; deselected on CPU-only machines by ``-m "not gpu"``):
everything ``compress`` builds must live on the model's device, and timings are device-synchronised."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from vidcom2.testing import tiny

from .reference import ARCHS

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("arch", ARCHS)
def test_compress_on_cuda(arch):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    model, processor = tiny.build(arch)
    model = model.to("cuda")
    batch = tiny.inputs(
        arch, processor, [tiny.make_video(4, 112, 140, 0), tiny.make_video(4, 112, 140, 1)], ["a", "bc"]
    )
    batch = batch.to("cuda")
    kw = dict(max_new_tokens=3, do_sample=False)
    plain = model.generate(**batch, **kw)
    with vidcom2.compress(model, "none", 1.0, text_rule="hf5"):
        same = model.generate(**batch, **kw)
    assert torch.equal(plain, same)
    with vidcom2.compress(model, "vidcom2", 0.25, measure=True) as session:
        out = model.generate(**batch, **kw)
    assert out.device.type == "cuda"
    for s in session.samples:
        assert 0 < s.visual_tokens_out < s.visual_tokens_in
        assert all(
            t is not None and t > 0 for t in (s.vision_encoder_s, s.compression_s, s.prefill_s, s.decode_s)
        )
