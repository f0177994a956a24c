"""Where a method acts, model- and method-agnostic: the machinery between the adapters (model questions) and the
methods (what to keep, and their in-LLM / decode plans). Importing this package imports no stage module.

- :mod:`vidcom2.stages.rebuild`: pre-LLM: shrink the prompt to the kept visual tokens;
- :mod:`vidcom2.stages.encoder`: vision encoder: attention-received scores and keys captured while it runs;
- :mod:`vidcom2.stages.in_llm`: inside the decoder during prefill (a method's :class:`~vidcom2.types.Plan`);
- :mod:`vidcom2.stages.decode`: while decoding (a plan's :class:`~vidcom2.types.DecodeStage`);
- :mod:`vidcom2.stages.attention` / :mod:`vidcom2.stages.masks`: pure tensor math, no hooks;
- ``_dispatch`` (private): the registered attention dispatcher, used through its scoped context manager;
  ``_pruner`` (private): the in-LLM hooks.
"""
