"""fastltx: a fast, faithful inference engine for Lightricks' LTX-2 audio-video models."""

from fastltx.checkpoint import CheckpointError
from fastltx.models.transformer import LTXTransformer, ModalityInput, Perturbation, load_transformer
from fastltx.pipelines import GenerationResult, ImageInput, InputError, load_pipeline
from fastltx.runtime.memory import OutOfMemory
from fastltx.sampling.guidance import GuiderParams

__version__ = "0.1.0"
__all__ = ["CheckpointError", "GenerationResult", "GuiderParams", "ImageInput", "InputError", "LTXTransformer",
           "ModalityInput", "OutOfMemory", "Perturbation", "load_pipeline", "load_transformer"]
