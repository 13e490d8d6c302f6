"""agcam-pipeline: fine-tune timm ViTs with Lightning and explain them with Attention Guided CAM while they train."""

__version__ = "0.1.0"
__all__ = ["ExplainedCheckpointError", "ExplainedModel", "load_explained"]


def __getattr__(name: str):
    """The names in __all__ on first use, so `import pipeline` stays light (torch, timm: only when asked)."""
    if name in __all__:
        from pipeline import explained

        return getattr(explained, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
