"""Qwen3-VL under the harness: lmms-eval 0.7.3's simple ``Qwen3_VL`` plus :class:`eval.models.base.Harnessed`.

Parent behaviour kept (and recorded): bfloat16 weights (hard-wired); qwen-vl-utils samples ``nframes = frames``
uniformly over the whole clip (no fps cap unless ``fps`` is set); the parent prefetches the next request's
preprocessing in a thread, which the harness's one-request-at-a-time loop turns off (so ``preprocess`` is not
hidden behind the previous generation).
"""

from lmms_eval.models.simple.qwen3_vl import Qwen3_VL

from eval.models.base import Harnessed


class Qwen3VLCompressed(Harnessed, Qwen3_VL):
    family = "qwen3_vl"
    frames_arg = "max_num_frames"
