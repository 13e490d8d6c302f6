"""Read what an offline W&B run logged, straight from its `run-<id>.wandb` file (no account, no network).

The file format is read by `pipeline.lightning.wandb_offline.read_records`; wandb 0.31 ships no public reader.
"""

import json
import time
from pathlib import Path

from pipeline.lightning.wandb_offline import read_records


def finished_records(run_file: Path, timeout: float = 600.0) -> list:
    """The run's records once its `exit` record is on disk: wandb's writer may still be flushing after finish()."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(run_file)
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def history(run_dir: Path) -> list[dict]:
    """Every `wandb.log` row of the finished offline run in `run_dir` (an `offline-run-*` folder), as dicts."""
    (run_file,) = Path(run_dir).glob("run-*.wandb")
    rows = []
    for record in finished_records(run_file):
        if record.WhichOneof("record_type") == "history":
            items = record.history.item
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


def metric_by_epoch(rows: list[dict], key: str) -> dict[int, float]:
    """{epoch: value} for a metric Lightning logged once per epoch."""
    return {row["epoch"]: row[key] for row in rows if key in row}
