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
