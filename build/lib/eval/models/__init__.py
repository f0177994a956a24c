"""lmms-eval 0.7.3 model wrappers, one per model family; registered for lmms-eval's CLI in :mod:`eval.models.manifest`."""

#: conf/model family -> wrapper class path (imported lazily: each module imports its lmms-eval parent).
WRAPPERS = {
    "llava_onevision": "eval.models.llava_onevision.LlavaOneVisionCompressed",
    "llava_video": "eval.models.llava_video.LlavaVideoCompressed",
    "qwen2_vl": "eval.models.qwen2_vl.Qwen2VLCompressed",
    "qwen2_5_vl": "eval.models.qwen2_5_vl.Qwen2_5_VLCompressed",
    "qwen3_vl": "eval.models.qwen3_vl.Qwen3VLCompressed",
}
