"""Read what an offline W&B run logged, straight from its `run-<id>.wandb` file (no account, no network).

The file is LevelDB's log format (32 KiB blocks of CRC-framed chunks) after a 7-byte W&B header; each
reassembled chunk is a wandb `Record` protobuf. wandb 0.31 ships no public reader for it.
"""

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7  # b":W&B" + magic + version
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, LAST = 1, 4


def read_records(path: Path) -> list:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, position = [], b"", HEADER_SIZE
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            position += left_in_block
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if length == 0 and kind == 0:  # zero padding up to the block end
            position += left_in_block
            continue
        start = position + CHUNK_HEADER.size
        pending += data[start : start + length]
        position = start + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


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
