"""The tiny hub: a generated ``HF_HOME`` holding every benchmark in the layout lmms-eval 0.7.3's built-in tasks read.

``python -m eval.tinyhub [--out .cache/tiny_hub] [--no-unpack]`` writes it; point ``HF_HOME`` at it and the unmodified
built-in tasks (``mvbench``, ``videomme``, ``longvideobench_val_v``, ``mlvu_dev``, ``egoschema_subset``,
``perceptiontest_val_mc``) load offline. Never written into a user's real cache. Layouts: :mod:`eval.tinyhub.specs`.
"""
