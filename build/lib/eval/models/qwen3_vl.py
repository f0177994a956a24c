"""Qwen3-VL (dense and MoE) under the harness: lmms-eval 0.7.3's simple ``Qwen3_VL`` plus :class:`eval.models.base.Harnessed`.

Parent behaviour kept (and recorded): bfloat16 weights (hard-wired); qwen-vl-utils samples ``nframes = frames``
uniformly over the whole clip (no fps cap unless ``fps`` is set); the parent prefetches the next request's
preprocessing in a thread, which the harness's one-request-at-a-time loop turns off (so ``preprocess`` is not
hidden behind the previous generation).

MoE checkpoints (Qwen3-VL-30B-A3B): the parent picks ``Qwen3VLMoeForConditionalGeneration`` only when the checkpoint
*name* matches ``A<digits>B``; a MoE checkpoint under another name would load into the dense class with freshly
initialised MLPs (transformers only warns). The wrapper compares the name with the checkpoint's
``config.model_type`` before loading and refuses a mismatch.
"""

import re

from lmms_eval.models.simple.qwen3_vl import Qwen3_VL

from eval.models.base import Harnessed

MOE_NAME = re.compile(r"A\d+B")  # lmms_eval.models.simple.qwen3_vl: is_moe = bool(re.search(r"A\d+B", pretrained))


def check_variant(pretrained: str) -> None:
    """Raise ``ValueError`` when lmms-eval would pick the wrong Qwen3-VL class for ``pretrained``."""
    from transformers import AutoConfig

    model_type = getattr(AutoConfig.from_pretrained(pretrained), "model_type", "")
    by_name = bool(MOE_NAME.search(pretrained))
    is_moe = model_type == "qwen3_vl_moe"
    if by_name != is_moe:
        kind = "a MoE" if is_moe else "a dense"
        cls = "Qwen3VLMoeForConditionalGeneration" if by_name else "Qwen3VLForConditionalGeneration"
        raise ValueError(
            f"{pretrained} is {kind} Qwen3-VL checkpoint (config.model_type={model_type!r}), but lmms-eval 0.7.3 "
            f"chooses the class from the name and would load it as {cls}, with weights that do not fit. Fix: "
            + ("put the active-parameter tag in the folder name, as in Qwen3-VL-30B-A3B (e.g. a symlink "
               "'<name>-A3B')" if is_moe else "rename the folder so it does not contain 'A<digits>B'")
        )


class Qwen3VLCompressed(Harnessed, Qwen3_VL):
    family = "qwen3_vl"
    frames_arg = "max_num_frames"

    def __init__(self, pretrained: str, **kwargs) -> None:
        check_variant(str(pretrained))
        super().__init__(pretrained=pretrained, **kwargs)
