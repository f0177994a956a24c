"""The evaluation harness over lmms-eval 0.7.3: Hydra app, model wrappers, records, measurements."""
