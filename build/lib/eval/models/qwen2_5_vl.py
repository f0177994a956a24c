"""Qwen2.5-VL under the harness: lmms-eval 0.7.3's simple ``Qwen2_5_VL`` plus :class:`eval.models.base.Harnessed`.

Parent behaviour kept as is (and recorded): weights in bfloat16 (hard-wired by the parent); video read by
qwen-vl-utils at its default 2 fps (min 4, max 768 frames) and then ``linspace``-subsampled to ``frames``
(``max_num_frames``, the last frame always kept), so short clips get fewer frames than ``frames``: the record holds
the frames actually fed. ``min_pixels`` / ``max_pixels`` are the parent's unless the model config sets them.
"""

from lmms_eval.models.simple.qwen2_5_vl import Qwen2_5_VL

from eval.models.base import Harnessed


class Qwen2_5_VLCompressed(Harnessed, Qwen2_5_VL):
    family = "qwen2_5_vl"
    frames_arg = "max_num_frames"
