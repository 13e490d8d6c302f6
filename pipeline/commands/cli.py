"""The parser and dispatch of `agcam export | explain | evaluate`.

Each command checks every argument before it writes anything (each option in the object that owns it:
`ExplainRequest`, `ScoringOptions`, the card), and returns an exit code; a bad model file, data
config or argument ends it with one clear line on stderr (exit code 2), not a traceback. No command overwrites a
file it did not create: existing outputs are refused unless --overwrite is given, and inputs are never replaced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from pipeline.commands.data_check import run_data_check
from pipeline.commands.evaluate import (
    DATA_NAMES,
    EVAL_STAGES,
    EVALUATION_FILES,
    PAPER_METHODS,
    data_splits_from,
    evaluate,
    format_reliance,
    format_table,
    split_loader,
    write_evaluation,
)
from pipeline.commands.explain import ROWS_FILE, ExplainRequest, explain_files
from pipeline.commands.outputs import refuse_existing
from pipeline.commands.sanity import format_sanity, model_blocks, sanity_check
from pipeline.data import DatasetSplits
from pipeline.explain import METHODS
from pipeline.explained import (
    ExplainedModel,
    explained_from_lightning,
    explained_from_timm,
    export_checkpoint,
    load_explained,
)
from pipeline.files import describe_os_error
from pipeline.scoring import ScoringOptions

COMMANDS = ("export", "explain", "evaluate", "data")


def build_parser() -> argparse.ArgumentParser:
    """The three commands and their options."""
    parser = argparse.ArgumentParser(prog="agcam", description="Use a trained model (training: agcam fit --help).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("data", help="index a data config's splits and report images, classes, boxes, bad files")

    export = commands.add_parser("export", help="write an explained checkpoint from a Lightning checkpoint")
    export.add_argument("--ckpt_path", required=True, help="a .ckpt written by agcam fit")
    export.add_argument("--out", required=True, help="the explained checkpoint to write, e.g. model.agcam")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")

    explain = commands.add_parser("explain", help="overlays, raw maps and a JSON row per image file")
    explain.add_argument("--model", required=True, help="an explained checkpoint (or a Lightning .ckpt)")
    explain.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    explain.add_argument("--out", required=True, help="output folder (not inside an input folder)")
    explain.add_argument("--method", default="agcam", choices=sorted(METHODS))
    explain.add_argument("--target", help="explain this class (name or index) instead of the predicted one")
    explain.add_argument("--topk", type=int, default=1, help="explain the K most probable classes")
    explain.add_argument("--threshold", type=float, help="heatmap threshold of the boxes (default: the card's)")
    explain.add_argument("--batch_size", type=int, default=16)
    explain.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    explain.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run in --out")
    explain.add_argument(
        "--resume", action="store_true", help="keep the images an interrupted run into --out finished, do the rest"
    )

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
    evaluate.add_argument("--abpc_images", type=int, help="with --abpc: at most this many images")
    evaluate.add_argument(
        "--reliance", action="store_true", help="also accuracy with the labelled objects erased / the context erased"
    )
    evaluate.add_argument(
        "--sanity", action="store_true", help="also the randomization sanity check of every method (docs/method.md)"
    )
    evaluate.add_argument("--sanity_images", type=int, default=32, help="images explained by --sanity")
    evaluate.add_argument("--use_masks", action="store_true", help="score against ground-truth masks, not boxes")
    evaluate.add_argument("--pointing_tolerance", type=int, default=0, help="pointing game slack (px)")
    evaluate.add_argument("--out", default="evaluation", help="folder for evaluation.csv and evaluation.json")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    evaluate.add_argument("--overwrite", action="store_true", help="replace evaluation.csv/json of an earlier run")
    return parser


def run_command(argv: Sequence[str]) -> int:
    """Parse `argv` (the command first) and run the command.

    Args:
        argv: e.g. ["explain", "--model", "model.agcam", "images/", "--out", "explained"].

    Returns:
        The exit code: 0 on success, 1 when some input files failed, 2 on an error.
    """
    if argv and argv[0] == "data":  # its options are a data config's (jsonargparse), not argparse's
        return run_data_check(argv[1:])
    args = build_parser().parse_args(argv)
    run = {"export": run_export, "explain": run_explain, "evaluate": run_evaluate}[args.command]
    try:
        return run(args)
    except OSError as error:  # missing or unreadable files, a full disk: the path and the problem
        print(f"agcam {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except ValueError as error:  # bad files, configs and arguments: the message names them
        print(f"agcam {args.command}: error: {error}", file=sys.stderr)
        return 2


def run_export(args: argparse.Namespace) -> int:
    refuse_existing([Path(args.out)], args.overwrite)
    if Path(args.out).resolve() == Path(args.ckpt_path).resolve():
        raise ValueError(f"--out {args.out} is the checkpoint being exported; choose another file")
    path = export_checkpoint(args.ckpt_path, args.out)
    print(f"Explained checkpoint: {path}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.device)
    request = ExplainRequest(
        method=args.method,
        target=None if args.target is None else model.class_index(args.target),
        topk=args.topk,
        threshold=model.threshold if args.threshold is None else args.threshold,
        batch_size=args.batch_size,
    )
    report = explain_files(model, args.inputs, args.out, request, overwrite=args.overwrite, resume=args.resume)
    print(f"{report.written} explanation(s) written to {args.out} (rows: {Path(args.out) / ROWS_FILE})")
    if report.failed:
        print(f"{len(report.failed)} file(s) could not be read:", file=sys.stderr)
        for path, reason in report.failed:
            print(f"  {path}: {reason}", file=sys.stderr)
        return 1
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    refuse_existing([Path(args.out) / name for name in EVALUATION_FILES], args.overwrite)
    if args.abpc_images is not None and not args.abpc:
        raise ValueError("--abpc_images needs --abpc")
    if args.sanity_images < 1:
        raise ValueError(f"--sanity_images must be >= 1, got {args.sanity_images}")
    options = ScoringOptions(
        methods=args.methods,
        threshold=0.5 if args.threshold is None else args.threshold,
        use_masks=args.use_masks,
        pointing_tolerance=args.pointing_tolerance,
        abpc_images=args.abpc_images if args.abpc else 0,  # None: every image
    )  # checked before the data and the model are read
    data = data_splits_from(args.data)
    model = evaluated_model(args, data)
    if args.sanity:
        model_blocks(model.model)  # refused before the evaluation runs
    if args.threshold is None:
        options = dataclasses.replace(options, threshold=model.threshold)
    threshold = options.threshold
    loader = split_loader(data, args.split, model)
    results = evaluate(model, loader, options, reliance=args.reliance)
    dataset = f"{type(data.source).__name__}/{args.split}"
    print(f"Localization on {dataset}, threshold {threshold} (Used: correctly classified cases; Skipped: the others)")
    print(format_table(results["methods"]))
    if results["unreadable"] or results["unboxed"]:
        print(f"  unreadable images skipped: {results['unreadable']}; cases without a box: {results['unboxed']}")
    if "reliance" in results:
        print(format_reliance(results["reliance"]))
    if args.sanity:
        results["sanity"] = run_sanity(model, loader, options.methods, args.sanity_images)
    model_name = args.model or f"{args.timm_model} + {args.weights}"
    described = {"model": model_name, "dataset": dataset, "threshold": threshold, **results}
    for path in write_evaluation(described, args.out):
        print(f"  wrote {path}")
    return 0


def run_sanity(model: ExplainedModel, loader: Iterable[dict], methods: Sequence[str], count: int) -> dict:
    """The randomization check on the first `count` images of the split; printed and returned per method."""
    chunks: list[torch.Tensor] = []
    for batch in loader:
        chunks.append(batch["image"])
        if sum(len(chunk) for chunk in chunks) >= count:
            break
    images = torch.cat(chunks)[:count].to(model.device)
    rows = sanity_check(model.model, images, methods)
    print(f"Sanity check: blocks randomized from the top, maps of {len(images)} images vs the trained model's")
    print(format_sanity(rows))
    return rows


def evaluated_model(args: argparse.Namespace, data: DatasetSplits) -> ExplainedModel:
    """--model (explained or Lightning checkpoint), or --timm_model with --weights and the data's classes."""
    if (args.model is None) == (args.timm_model is None) or (args.timm_model is not None and args.weights is None):
        raise ValueError("give either --model, or --timm_model with --weights")
    if args.model is not None:
        return load_model(args.model, args.device)
    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as error:
        raise ValueError(f"--model_kwargs is not valid JSON ({error})") from None
    if not isinstance(model_kwargs, dict):
        raise ValueError(f"--model_kwargs must be a JSON object, got {args.model_kwargs}")
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
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device; give auto, cpu, cuda or cuda:N") from None
