"""Mirror a finished run to Weights & Biases (``logger=wandb``). The record on disk stays the source of truth.

Logs the resolved config, the accuracy (headline and breakdown), the efficiency block (flattened, e.g.
``efficiency/latency_s/prefill``) into the run summary, and a samples table (one row per sample: task, doc id,
answer, target, visual tokens in/out, split latencies). Runs of one sweep share ``group`` (the multirun folder name
unless the config sets one). ``WANDB_MODE=offline`` writes ``<dir>/wandb/offline-run-*`` and needs no network.
"""

from __future__ import annotations


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        elif isinstance(v, (int, float)) or v is None:
            out[key] = v
    return out


SAMPLE_COLUMNS = ("task", "doc_id", "answer", "target", "visual_tokens_in", "visual_tokens_out", "frames_fed",
                  "preprocess_s", "vision_encoder_s", "compression_s", "prefill_s", "decode_s", "new_tokens")


class WandbMirror:
    """``log(record, sample_rows, group)`` opens one wandb run per harness run and finishes it."""

    def __init__(self, project: str = "vidcom2-harness", entity: str | None = None, group: str | None = None,
                 job_type: str = "eval", log_samples: bool = True, dir: str | None = None):
        self.project, self.entity, self.group = project, entity, group
        self.job_type, self.log_samples, self.dir = job_type, log_samples, dir

    def run_name(self, rec: dict) -> str:
        return f"{rec['benchmark']}/{rec['model']}/{rec['method']}/r{rec['retention_ratio']:.2f}/seed{rec['seed']}"

    def log(self, rec: dict, rows: list[dict], group: str | None = None):
        import wandb

        run = wandb.init(
            project=self.project, entity=self.entity, group=self.group or group, job_type=self.job_type,
            name=self.run_name(rec), config=rec["config"], dir=self.dir, reinit="finish_previous",
            tags=[rec["benchmark"], rec["model"], rec["method"]],
        )
        try:
            metrics = {"accuracy/headline": rec["accuracy"]["headline"], "accuracy/unparsable": rec["accuracy"]["unparsable"]}
            metrics.update({f"accuracy/{k}": v for k, v in rec["accuracy"]["breakdown"].items()})
            metrics.update(flatten(rec["efficiency"], "efficiency"))
            metrics = {k: v for k, v in metrics.items() if v is not None}
            run.log(metrics)
            run.summary.update(metrics)
            if self.log_samples and rows:
                table = wandb.Table(columns=list(SAMPLE_COLUMNS))
                for r in rows:
                    table.add_data(*[None if r.get(c) is None else (r[c] if isinstance(r[c], (int, float)) else str(r[c]))
                                     for c in SAMPLE_COLUMNS])
                run.log({"samples": table})
        finally:
            run.finish()
        return run
