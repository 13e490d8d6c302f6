"""`python -m pipeline ...` is `agcam ...` (Lightning's DDP launcher re-runs this module in each process)."""

from pipeline.cli import main

if __name__ == "__main__":
    main()
