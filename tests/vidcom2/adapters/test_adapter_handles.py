"""Every adapter's module handles resolve on the real transformers classes (depths from the configs)."""

import pytest
import torch

from vidcom2.adapters import get_adapter
from vidcom2.testing import tiny


@pytest.mark.parametrize("arch", tiny.ALL_ARCHS)
def test_module_handles(arch, tiny_model):
    model, _ = tiny_model(arch)
    adapter = get_adapter(model)
    vision_depth = getattr(model.config.vision_config, "num_hidden_layers", None) or model.config.vision_config.depth
    blocks = adapter.vision_blocks(model)
    assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) == vision_depth
    layers = adapter.decoder_layers(model)
    assert len(layers) == model.config.get_text_config().num_hidden_layers
    assert all(any(p is q for q in model.parameters()) for p in layers[0].parameters())


@pytest.mark.parametrize("arch", tiny.ALL_ARCHS)
def test_every_family_answers_the_protocol_members_compress_and_pdrop_ask(arch, tiny_model):
    """``newline_order`` (recorded by compress without probing) and ``layer_query_key`` (PDrop's recomputed row)."""
    import vidcom2
    from vidcom2.adapters import adapter_for
    from vidcom2.adapters.base import Adapter

    model, _ = tiny_model(arch)
    adapter = get_adapter(model)
    # LLaVA-Video places its per-row newlines (official order by default); the other layouts have none to place
    want = "after_frame" if arch == "llava_video" else None
    assert isinstance(adapter, Adapter) and adapter.newline_order == want
    with vidcom2.compress(model, "none", 1.0) as session:
        assert session.info["newline_order"] == want
    if arch == "llava_video":
        assert adapter_for("llava_video", newline_order="row").newline_order == "row"
    text = model.config.get_text_config()
    layer, n = adapter.decoder_layers(model)[1], 5
    hidden = torch.randn(1, n, text.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q, k, scaling = adapter.layer_query_key(layer, hidden)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert q.shape == (1, text.num_attention_heads, 1, head_dim)
    assert k.shape == (1, text.num_key_value_heads, n, head_dim)
    assert scaling == pytest.approx(head_dim**-0.5)
