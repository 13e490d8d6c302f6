"""`agcam`: the offline commands (export, explain, evaluate) without Lightning, everything else through LightningCLI."""

from __future__ import annotations

import sys

from pipeline.checkpoints import CheckpointError
from pipeline.commands.cli import COMMANDS, run_command
from pipeline.data import BadSampleError, LayoutError
from pipeline.files import describe_os_error


def main(args: list[str] | None = None) -> None:
    """Entry point of `agcam` and `python -m pipeline`; tests call it with an argument list."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in COMMANDS:
        exit_code = run_command(argv)
        if exit_code:
            raise SystemExit(exit_code)
        return
    from pipeline.lightning.cli import SettingsError, run_lightning_cli  # fit / validate / test / predict

    command = f"agcam {argv[0] if argv else 'fit'}"
    try:
        explained = ",".join(name for name in COMMANDS if name != "data")
        epilog = f"Explained checkpoints: agcam {{{explained}}} --help; a dataset check: agcam data --help"
        run_lightning_cli(args, epilog=epilog)
    except (LayoutError, BadSampleError) as error:  # the user's data: the message says what and where
        print(f"agcam: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except SettingsError as error:  # a class refused a config value: the message names the option
        print(f"{command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except CheckpointError as error:  # a bad --ckpt_path: the file, the problem, the other checkpoints
        print(f"{command}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as error:  # a full disk, an unwritable folder, a missing file: the path and the problem
        # (a failed W&B write says so itself: pipeline.lightning.wandb_offline.WriteFailures)
        print(f"{command}: error: {describe_os_error(error)}", file=sys.stderr)
        raise SystemExit(2) from None
