"""FastVID's MAP-head signal through ``vidcom2.compress``: a checkpoint without SigLIP's head gets it from its source
(here a local folder in the layout of google/siglip-so400m-patch14-384's ``model.safetensors``), with the same
result as the checkpoint's own head; offline without the source, and on Qwen (no head), a clear error before anything
runs. The adapter-equivalence of the whole path is in tests/vidcom2/adapters (test_compress_equivalence,
test_llava_video)."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import vidcom2
from tests.vidcom2._helpers import generate_compressed
from vidcom2.adapters import get_adapter
from vidcom2.adapters._siglip_head import of_tower
from vidcom2.testing import tiny


@pytest.fixture(scope="module")
def llava(tiny_model):
    model, processor = tiny_model("llava_onevision")
    batch = tiny.inputs("llava_onevision", processor, tiny.make_video(4, 112, 140, seed=2), "What moves?")
    return model, batch


def _headless(model):
    """A copy of ``model`` whose tower lost its head, as LLaVA checkpoints (LLaVA-NeXT sets ``head = Identity``)."""
    other = copy.deepcopy(model)
    other.model.vision_tower.head = nn.Identity()
    return other


def _write_source(model, folder, scale=1.0):
    """The tower's post_layernorm / head tensors under SigLIP checkpoint names, plus a text-tower tensor."""
    tower = model.model.vision_tower
    tensors = {f"vision_model.post_layernorm.{k}": v * scale for k, v in tower.post_layernorm.state_dict().items()}
    tensors |= {f"vision_model.head.{k}": v * scale for k, v in tower.head.state_dict().items()}
    tensors["text_model.final_layer_norm.weight"] = torch.ones(3)
    folder.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def test_a_headless_checkpoint_loads_the_head_from_its_source_with_the_same_result(llava, tmp_path):
    model, batch = llava
    own, own_session = generate_compressed(model, batch, "fastvid", 0.25, 3)
    assert own_session.info["map_head"] == "checkpoint"
    headless = _headless(model)
    adapter = get_adapter(headless)
    adapter.map_head_source = str(_write_source(model, tmp_path / "siglip"))
    got, session = generate_compressed(headless, batch, "fastvid", 0.25, 3, adapter=adapter)
    assert session.info["map_head"] == adapter.map_head_source
    assert torch.equal(got.sequences, own.sequences)
    assert torch.allclose(torch.stack(got.logits), torch.stack(own.logits), atol=1e-6)
    assert session.samples[0].visual_tokens_out == own_session.samples[0].visual_tokens_out
    # another head (scaled weights) is really used: a different global feature and attention
    head = of_tower(headless.model.vision_tower, str(_write_source(model, tmp_path / "other", scale=0.5)))
    hidden = torch.randn(2, 729, 32, generator=torch.Generator().manual_seed(0))
    mine = of_tower(model.model.vision_tower)
    assert not torch.allclose(head(hidden)[0], mine(hidden)[0])


def test_offline_without_the_source_is_one_clear_error_before_generate(llava, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    model, batch = llava
    headless = _headless(model)
    calls = []
    headless.generate = lambda **kw: calls.append(kw)
    with pytest.raises(ValueError, match=r"no SigLIP MAP head .*google/siglip-so400m-patch14-384.*signal='encoder'"):
        with vidcom2.compress(headless, "fastvid", 0.25):
            pass
    assert calls == [] and "generate" in headless.__dict__  # refused at the block's entry: nothing ran


def test_a_source_with_other_tensors_is_refused(llava, tmp_path):
    model, _ = llava
    folder = tmp_path / "bad"
    folder.mkdir()
    save_file({"vision_model.post_layernorm.weight": torch.ones(32)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="expected the tensors"):
        of_tower(_headless(model).model.vision_tower, str(folder))


def test_qwen_has_no_map_head_and_says_what_runs(tiny_model):
    model, _ = tiny_model("qwen2_5_vl")
    with pytest.raises(ValueError, match=r"qwen2_5_vl vision tower does not have; use signal='encoder'"):
        with vidcom2.compress(model, "fastvid", 0.25):
            pass
    with vidcom2.compress(model, "fastvid", 0.25, signal="encoder") as session:
        assert session.info["hparams"] == {"signal": "encoder"} and "map_head" not in session.info
