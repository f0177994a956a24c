"""Model adapters: the only code that knows module paths, token layouts and position ids of a model family.

    adapter = vidcom2.adapters.get_adapter(model)        # by HF class name, then by config.model_type
    adapter.decoder_layers(model), adapter.visual_token_mask(model, inputs), ...

See :mod:`vidcom2.adapters.base` for the interface. Importing this package imports no transformers code.
"""

from __future__ import annotations

import importlib

from vidcom2.registry import did_you_mean

# family -> (module, class, HF class names, config model_types)
_FAMILIES = {
    "llava_onevision": (
        "vidcom2.adapters.llava_onevision",
        "LlavaOnevisionAdapter",
        ("LlavaOnevisionForConditionalGeneration",),
        ("llava_onevision",),
    ),
    # LLaVA-Video weights load with the LLaVA-OV class: no class name of its own; chosen by family_of's config
    # marker (LLaVA-NeXT's mm_newline_position="grid") or explicitly (compress(..., adapter="llava_video"))
    "llava_video": ("vidcom2.adapters.llava_video", "LlavaVideoAdapter", (), ()),
    "qwen2_vl": (
        "vidcom2.adapters.qwen_vl",
        "QwenVLAdapter",
        ("Qwen2VLForConditionalGeneration",),
        ("qwen2_vl",),
    ),
    "qwen2_5_vl": (
        "vidcom2.adapters.qwen_vl",
        "QwenVLAdapter",
        ("Qwen2_5_VLForConditionalGeneration",),
        ("qwen2_5_vl",),
    ),
    # Qwen3-VL-MoE (Qwen3-VL-30B-A3B): the same layout, positions and hook points; only the MLPs differ
    "qwen3_vl": (
        "vidcom2.adapters.qwen_vl",
        "QwenVLAdapter",
        ("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration"),
        ("qwen3_vl", "qwen3_vl_moe"),
    ),
}


def list_adapters() -> list[str]:
    """Adapter family names (also the ``arch`` names of :mod:`vidcom2.testing.tiny`)."""
    return sorted(_FAMILIES)


def supported_classes() -> list[str]:
    return sorted(c for _, _, classes, _ in _FAMILIES.values() for c in classes)


def adapter_for(family: str, **options):
    """The adapter instance of ``family`` (e.g. ``"qwen2_5_vl"``); ``options`` go to its constructor (e.g.
    ``adapter_for("llava_video", newline_order="row")``)."""
    if family not in _FAMILIES:
        raise KeyError(f"unknown adapter family {family!r}.{did_you_mean(str(family), list(_FAMILIES))}")
    module, cls, _, _ = _FAMILIES[family]
    return getattr(importlib.import_module(module), cls)(family, **options)


def family_of(model) -> str:
    """The adapter family of an HF model instance: the LLaVA-Video config marker (``config.mm_newline_position ==
    "grid"`` on a LLaVA-OV model), then the class name, then ``config.model_type``."""
    name = type(model).__name__
    if (
        name in _FAMILIES["llava_onevision"][2]
        and getattr(model.config, "mm_newline_position", None) == "grid"
    ):
        return "llava_video"
    for family, (_, _, classes, _) in _FAMILIES.items():
        if name in classes:
            return family
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for family, (_, _, _, types) in _FAMILIES.items():
        if model_type in types:
            return family
    known = supported_classes()
    raise ValueError(
        f"no vidcom2 adapter for {name} (config.model_type={model_type!r}); pass a *ForConditionalGeneration "
        f"model of a supported family.{did_you_mean(name, known)}"
    )


def get_adapter(model):
    """The adapter for an HF model instance (or a family name)."""
    return adapter_for(model if isinstance(model, str) else family_of(model))


__all__ = ["adapter_for", "family_of", "get_adapter", "list_adapters", "supported_classes"]
