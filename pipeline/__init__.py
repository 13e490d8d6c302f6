"""agcam-pipeline: fine-tune timm ViTs with Lightning and explain them with Attention Guided CAM while they train."""

__version__ = "0.1.0"
