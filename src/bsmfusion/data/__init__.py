"""Data side: dialogue parsing and chunking, tabular preprocessing, dataset and collate."""
from .chunking import ChunkedThread, ChunkPacker
from .dataset import Collator, EncodedDataset, EncodedTable
from .dialogue import CleaningOptions, Message, parse_thread
from .tabular import TabularPreprocessor
from .text import TextPipeline, load_tokenizer

__all__ = [
    "ChunkedThread", "ChunkPacker", "Collator", "EncodedDataset", "EncodedTable", "CleaningOptions",
    "Message", "parse_thread", "TabularPreprocessor", "TextPipeline", "load_tokenizer",
]
