"""SigLIP's ``post_layernorm`` and attention-pooling (MAP) head for the LLaVA families: the frame signal of FastVID.

FastVID (LunarShen/FastVID a40a109, ``multimodal_encoder/siglip_encoder.py::SigLipVisionAbstract``,
``llava_arch.py::encode_images``) runs the encoder output that feeds the projector (LLaVA-OV: ``[F, 729, 1152]``)
through the *original* SigLIP checkpoint's ``post_layernorm`` and head; the head's pooled vector is the frame's global
feature, its probe attention (mean over heads) is the frame attention. LLaVA checkpoints drop the head
(``vision_use_head=False``), so the official code loads ``google/siglip-so400m-patch14-384`` next to the model; so does
:func:`load`, reading only the ``post_layernorm`` / ``head`` tensors of its ``model.safetensors``. A model whose tower
has a head (``vision_use_head=True``, e.g. ``vidcom2.testing.tiny``) uses its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

#: where the official code loads the head from (``mm_vision_tower`` of the LLaVA-OV / LLaVA-Video configs)
SOURCE = "google/siglip-so400m-patch14-384"
_FILE = "model.safetensors"


@dataclass
class MapHead:
    """``post_layernorm`` + ``head`` (a transformers ``SiglipMultiheadAttentionPoolingHead``) and where they came from."""

    post_layernorm: nn.Module
    head: nn.Module
    source: str

    def __call__(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``hidden [F, P, D]`` (encoder output, before ``post_layernorm``) -> (global ``[F, D]``, attention ``[F, P]``)."""
        x = self.post_layernorm(hidden.to(self.post_layernorm.weight.dtype))
        return map_head_signal(x, self.head)


def map_head_signal(hidden: torch.Tensor, head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Global feature and probe attention of SigLIP's attention-pooling head.

    hidden: ``[F, P, D]`` **after** ``post_layernorm``; head: ``probe``, ``attention`` (``nn.MultiheadAttention``),
    ``layernorm``, ``mlp``. Returns the head's pooled output ``[F, D]`` and the probe's attention weights averaged
    over heads ``[F, P]`` (what the official head returns; transformers' own head discards the weights)."""
    probe = head.probe.expand(hidden.shape[0], -1, -1).to(hidden.dtype)
    pooled, weights = head.attention(probe, hidden, hidden, need_weights=True, average_attn_weights=True)
    pooled = pooled + head.mlp(head.layernorm(pooled))
    return pooled[:, 0], weights[:, 0]


def of_tower(tower: nn.Module, source: str = SOURCE) -> MapHead:
    """The model's own head when its tower has one, else the head loaded from ``source`` (:func:`load`)."""
    vision = getattr(tower, "vision_model", tower)  # 5.x: the tower is the SiglipVisionModel itself
    if getattr(vision, "head", None) is not None and not isinstance(vision.head, nn.Identity):
        return MapHead(vision.post_layernorm, vision.head, "checkpoint")
    weight = vision.post_layernorm.weight
    return load(vision.config, source, device=weight.device, dtype=weight.dtype)


def _tensors(source: str) -> dict[str, torch.Tensor]:
    """``post_layernorm.*`` / ``head.*`` tensors of ``source`` (a hub repo id or a folder with model.safetensors)."""
    from safetensors import safe_open

    path = Path(source) / _FILE
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(source, _FILE)
        except Exception as err:  # offline, not cached, no such repo: one clear line
            raise ValueError(
                f"fastvid signal='map_head': the checkpoint has no SigLIP MAP head (vision_use_head=False) and "
                f"{source}/{_FILE} could not be loaded ({type(err).__name__}); download it once while online "
                f"(huggingface-cli download {source} {_FILE}), pass a local folder as map_head_source, or use "
                f"signal='encoder'"
            ) from None
    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            for part in ("post_layernorm.", "head."):
                if key.startswith(("vision_model." + part, part)):
                    out[part + key.split(part, 1)[1]] = f.get_tensor(key)
    return out


def load(vision_config, source: str, *, device=None, dtype=None) -> MapHead:
    """``post_layernorm`` + MAP head of ``vision_config``'s geometry with the weights of ``source``."""
    from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

    tensors = _tensors(source)
    module = nn.Module()
    module.post_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
    module.head = SiglipMultiheadAttentionPoolingHead(vision_config)
    want = set(module.state_dict())
    if set(tensors) != want:
        raise ValueError(f"{source}: expected the tensors {sorted(want)} of a SigLIP MAP head, found {sorted(tensors)}")
    try:
        module.load_state_dict(tensors)
    except RuntimeError as err:
        raise ValueError(f"{source}: its MAP head does not fit this vision tower ({str(err).splitlines()[-1]})") from None
    module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return MapHead(module.post_layernorm, module.head, source)
