"""The text path: Gemma 3 (transformers) -> feature extractor (V1/V2) -> video and audio connectors."""

from fastltx.models.text_encoder.config import ConnectorConfig, GemmaGeometry, TextConfig
from fastltx.models.text_encoder.encoder import TextEncoder, load_text_encoder
from fastltx.models.text_encoder.gemma import (MAX_LENGTH, GemmaDirectory, GemmaEncoder, load_gemma,
                                               read_gemma_directory)
from fastltx.models.text_encoder.processor import TextEncoding, TextProcessor, load_text_processor

__all__ = ["MAX_LENGTH", "ConnectorConfig", "GemmaDirectory", "GemmaEncoder", "GemmaGeometry", "TextConfig",
           "TextEncoder", "TextEncoding", "TextProcessor", "load_gemma", "load_text_encoder", "load_text_processor",
           "read_gemma_directory"]
