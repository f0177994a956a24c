"""What the three VidCom2-repository ports share: generator-only noise, approximation labels, low precision.
Per-port tests: test_visionzip_vc2.py, test_holitom_vc2.py, test_fastvid_vc2.py; references: vc2_reference.py."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from tests.vidcom2.methods.vc2_reference import (
    _random,
    _run,
    _static_video,
)


@pytest.mark.parametrize("name", ["holitom_vc2", "fastvid_vc2"])
def test_noise_comes_from_the_generator_only(name):
    x = _static_video(10, 12, seed=1, cut=5, moving=0.2)
    torch.manual_seed(0)
    a = vidcom2.apply(name, x, 0.3, seed=4, **({"D": 0.5} if name == "holitom_vc2" else {}))
    torch.manual_seed(99)
    b = vidcom2.apply(name, x, 0.3, seed=4, **({"D": 0.5} if name == "holitom_vc2" else {}))
    assert torch.equal(a.keep, b.keep) and torch.equal(a.features, b.features)
    assert vidcom2.get_method(name).info.stochastic


def test_ports_are_named_approximations_on_post_projector_features():
    for name in ("visionzip_vc2", "holitom_vc2", "fastvid_vc2"):
        info = vidcom2.get_method(name).info
        assert info.stage == "pre_llm" and info.needs == () and info.approximation
        assert "VidCom2" in info.code and "qwen" in info.code
    with pytest.raises(ValueError, match="slots"):
        _run("holitom_vc2", _random(2, 4), 0.5, slots="sorted")
    with pytest.raises(ValueError, match="stprune_d"):
        _run("fastvid_vc2", _random(2, 4), 0.5, stprune_d=1.5)
    with pytest.raises(ValueError, match="dominant_ratio"):
        _run("visionzip_vc2", _random(2, 4), 0.5, dominant_ratio=-0.1)


@pytest.mark.parametrize("name", ["visionzip_vc2", "holitom_vc2", "fastvid_vc2"])
def test_low_precision_runs_and_keeps_the_float32_budget(name):
    x = _static_video(6, 16, seed=2, cut=3, moving=0.3).float()
    a = vidcom2.apply(name, x, 0.25)
    b = vidcom2.apply(name, x.bfloat16(), 0.25)
    assert b.gather(x.bfloat16()).dtype == torch.bfloat16
    if name != "fastvid_vc2":  # fastvid's segmentation may move with bf16 frame means; its count with it
        assert int(a.keep.sum()) == int(b.keep.sum())
