"""Hydra entry point: ``python -m eval.run`` (console script ``vtc-eval``). Config: ``conf/eval.yaml``.

    python -m eval.run model=tiny_qwen2_5_vl benchmark=tiny_mvbench method=vidcom2 retention_ratio=0.25
    python -m eval.run -m benchmark=tiny_mvbench,tiny_videomme 'method=glob(*)'      # a sweep, in-process

One run writes ``results/runs/<benchmark>/<model>/<method>/r<ratio>/seed<seed>-<identity hash>/record.json`` (see
:mod:`eval.record`); a finished run of the same identity is skipped (``force=true`` redoes it). Any failure exits
non-zero; in a sweep the other runs still finish and keep their records. A bad configuration
(:class:`eval.validate.ConfigError`) prints one line, ``error: <key>=<value> ...; <fix>``, and exits 2 without a
traceback (``HYDRA_FULL_ERROR=1`` shows it); any other failure is reported by Hydra with its traceback.
"""

import os
import sys
from pathlib import Path

import hydra

# absolute: a relative config_path resolves against the calling module, which differs between `python -m eval.run`
# and the `vtc-eval` console script
CONF = str(Path(__file__).resolve().parents[1] / "conf")
CONFIG_ERROR_EXIT = 2
_REFUSED: list[str] = []  # configuration errors of this process's runs (a sweep goes on after one)


@hydra.main(version_base="1.3", config_path=CONF, config_name="eval")
def _app(cfg) -> None:
    from eval.runner import run
    from eval.validate import ConfigError

    try:
        run(cfg)
    except ConfigError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        _REFUSED.append(str(e))


def main() -> None:
    from eval.hubdata import resolve_hf_home

    resolve_hf_home()  # before lmms-eval is imported: its task modules read HF_HOME at import (MLVU, PerceptionTest)
    _app()
    from eval.distributed import shutdown

    shutdown()  # data parallel launches: all ranks leave together (no-op in one process)
    if _REFUSED:
        sys.exit(CONFIG_ERROR_EXIT)


if __name__ == "__main__":
    main()
