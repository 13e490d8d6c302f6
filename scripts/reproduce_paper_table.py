"""Reproduce the paper's comparison (AG-CAM, Attention Rollout, LRP) on the embedded synthetic shapes, on a CPU.

    python scripts/reproduce_paper_table.py                                   # train, then evaluate
    python scripts/reproduce_paper_table.py --ckpt_path RUN/checkpoints/last.ckpt
    python scripts/reproduce_paper_table.py --model model.agcam --split test --no-abpc

Training runs `agcam fit` on configs/synthetic.yaml (without W&B); evaluation runs `agcam evaluate` on the same
config's data: localization of every method, and ABPC, printed as the paper's table and written as CSV and JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import main as agcam
from pipeline.commands.evaluate import PAPER_METHODS

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    trained = parser.add_mutually_exclusive_group()
    trained.add_argument("--ckpt_path", help="evaluate this Lightning checkpoint instead of training")
    trained.add_argument("--model", help="evaluate this explained checkpoint instead of training")
    parser.add_argument("--config", default=str(CONFIG), help="training config; its data: section is evaluated")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (one reaches ~99%% val/acc)")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--no-abpc", dest="abpc", action="store_false", help="skip the faithfulness column")
    parser.add_argument("--out", default="runs/paper_table", help="training run and evaluation outputs")
    return parser.parse_args(argv)


def train(config: str, epochs: int, run_dir: Path) -> str:
    """`agcam fit` without W&B into run_dir; the path of its best checkpoint on val/acc (the config's monitor)."""
    agcam(
        ["fit", "--config", config, "--trainer.max_epochs", str(epochs), "--trainer.logger", "false"]
        + ["--trainer.default_root_dir", str(run_dir)]
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary["best_checkpoint"] or summary["last_checkpoint"]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    model = args.model or args.ckpt_path or train(args.config, args.epochs, out / "train")
    evaluate = ["evaluate", "--model", model, "--data", args.config, "--split", args.split]
    agcam([*evaluate, "--methods", *PAPER_METHODS, *(["--abpc"] if args.abpc else []), "--out", str(out)])


if __name__ == "__main__":
    main()
