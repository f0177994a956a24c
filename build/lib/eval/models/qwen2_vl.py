"""Qwen2-VL under the harness: lmms-eval 0.7.3's simple ``Qwen2_VL`` plus :class:`eval.models.base.Harnessed`.

Parent behaviour kept (and recorded): ``torch_dtype="auto"`` (the checkpoint's dtype); video read by qwen-vl-utils
at 2 fps then ``linspace``-subsampled to at most ``frames``. The parent logs and drops a video it cannot read; the
harness refuses such a request instead (no video reaches ``generate`` -> error).
"""

from lmms_eval.models.simple.qwen2_vl import Qwen2_VL

from eval.models.base import Harnessed


class Qwen2VLCompressed(Harnessed, Qwen2_VL):
    family = "qwen2_vl"
    frames_arg = "max_num_frames"
