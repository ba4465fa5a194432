"""fastltx: a fast, faithful inference engine for Lightricks' LTX-2 audio-video models."""

from fastltx.checkpoint import CheckpointError
from fastltx.models.transformer import LTXTransformer, ModalityInput, Perturbation, load_transformer

__version__ = "0.1.0"
__all__ = ["CheckpointError", "LTXTransformer", "ModalityInput", "Perturbation", "load_transformer"]
