"""`agcam export | explain | evaluate`: the commands that use a trained model, beside LightningCLI's fit/validate/...

Each command returns an exit code; a bad model file, data config or argument ends it with one clear line on stderr
(exit code 2), not a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.data import ViTDataModule
from pipeline.evaluate import (
    DATA_NAMES,
    EVAL_STAGES,
    PAPER_METHODS,
    data_module_from,
    evaluate,
    format_table,
    split_loader,
    write_evaluation,
)
from pipeline.explain import METHODS
from pipeline.explain_files import ROWS_FILE, explain_files
from pipeline.explained import ExplainedModel, load_explained
from pipeline.export import explained_from_lightning, explained_from_timm, export_checkpoint

COMMANDS = ("export", "explain", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The three commands and their options."""
    parser = argparse.ArgumentParser(prog="agcam", description="Use a trained model (training: agcam fit --help).")
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="write an explained checkpoint from a Lightning checkpoint")
    export.add_argument("--ckpt_path", required=True, help="a .ckpt written by agcam fit")
    export.add_argument("--out", required=True, help="the explained checkpoint to write, e.g. model.agcam")

    explain = commands.add_parser("explain", help="overlays, raw maps and a JSON row per image file")
    explain.add_argument("--model", required=True, help="an explained checkpoint (or a Lightning .ckpt)")
    explain.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    explain.add_argument("--out", required=True, help="output folder")
    explain.add_argument("--method", default="agcam", choices=sorted(METHODS))
    explain.add_argument("--target", help="explain this class (name or index) instead of the predicted one")
    explain.add_argument("--topk", type=int, default=1, help="explain the K most probable classes")
    explain.add_argument("--threshold", type=float, help="heatmap threshold of the boxes (default: the card's)")
    explain.add_argument("--batch_size", type=int, default=16)
    explain.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")

    evaluate = commands.add_parser("evaluate", help="the paper's localization table on a dataset split")
    evaluate.add_argument("--model", help="an explained checkpoint or a Lightning .ckpt")
    evaluate.add_argument("--timm_model", help="instead of --model: a timm model name, with --weights")
    evaluate.add_argument("--weights", help="the timm model's fine-tuned weights (.safetensors or .pth)")
    evaluate.add_argument("--model_kwargs", default="{}", help="the timm model's constructor kwargs as JSON")
    evaluate.add_argument(
        "--data", nargs="+", required=True, help=f"config files with a data: section, or one of {sorted(DATA_NAMES)}"
    )
    evaluate.add_argument("--split", default="val", choices=sorted(EVAL_STAGES))
    evaluate.add_argument("--methods", nargs="+", default=list(PAPER_METHODS), choices=sorted(METHODS))
    evaluate.add_argument("--threshold", type=float, help="heatmap threshold (default: the card's, else 0.5)")
    evaluate.add_argument("--abpc", action="store_true", help="also measure ABPC (faithfulness)")
    evaluate.add_argument("--out", default="evaluation", help="folder for evaluation.csv and evaluation.json")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    return parser


def run_command(argv: Sequence[str]) -> int:
    """Parse `argv` (the command first) and run the command.

    Args:
        argv: e.g. ["explain", "--model", "model.agcam", "images/", "--out", "explained"].

    Returns:
        The exit code: 0 on success, 1 when some input files failed, 2 on an error.
    """
    args = build_parser().parse_args(argv)
    run = {"export": run_export, "explain": run_explain, "evaluate": run_evaluate}[args.command]
    try:
        return run(args)
    except (OSError, ValueError) as error:  # bad files, configs and arguments: the message names them
        print(f"agcam {args.command}: error: {error}", file=sys.stderr)
        return 2


def run_export(args: argparse.Namespace) -> int:
    path = export_checkpoint(args.ckpt_path, args.out)
    print(f"Explained checkpoint: {path}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.device)
    report = explain_files(
        model, args.inputs, args.out, args.method, args.target, args.topk, args.threshold, args.batch_size
    )
    print(f"{report.written} explanation(s) written to {args.out} (rows: {Path(args.out) / ROWS_FILE})")
    if report.failed:
        print(f"{len(report.failed)} file(s) could not be read:", file=sys.stderr)
        for path, reason in report.failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    data = data_module_from(args.data)
    model = evaluated_model(args, data)
    threshold = model.threshold if args.threshold is None else args.threshold
    results = evaluate(model, split_loader(data, args.split, model), args.methods, threshold, args.abpc)
    dataset = f"{type(data.source).__name__}/{args.split}"
    print(f"Localization on {dataset}, threshold {threshold} (Used: correctly classified cases; Skipped: the others)")
    print(format_table(results["methods"]))
    if results["unreadable"] or results["unboxed"]:
        print(f"  unreadable images skipped: {results['unreadable']}; cases without a box: {results['unboxed']}")
    model_name = args.model or f"{args.timm_model} + {args.weights}"
    described = {"model": model_name, "dataset": dataset, "threshold": threshold, **results}
    for path in write_evaluation(described, args.out):
        print(f"  wrote {path}")
    return 0


def evaluated_model(args: argparse.Namespace, data: ViTDataModule) -> ExplainedModel:
    """--model (explained or Lightning checkpoint), or --timm_model with --weights and the data's classes."""
    if (args.model is None) == (args.timm_model is None) or (args.timm_model is not None and args.weights is None):
        raise ValueError("give either --model, or --timm_model with --weights")
    if args.model is not None:
        return load_model(args.model, args.device)
    model_kwargs = json.loads(args.model_kwargs)
    model = explained_from_timm(args.timm_model, args.weights, data.class_names, data.multi_label, model_kwargs)
    return model.to(resolve_device(args.device))


def load_model(path: str, device: str) -> ExplainedModel:
    """An explained checkpoint, or a Lightning `.ckpt` converted in memory, on `device`."""
    model = explained_from_lightning(path) if Path(path).suffix == ".ckpt" else load_explained(path)
    return model.to(resolve_device(device))


def resolve_device(device: str) -> torch.device:
    """ "auto" is the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
