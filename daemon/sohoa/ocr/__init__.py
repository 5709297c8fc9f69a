"""On-box Vietnamese OCR with onnxruntime.

A PP-OCRv6 detector finds text lines on a downscaled page, layout rules put
them in reading order, and the AsterNet recognizer reads each line with its
diacritics. Model files come from ``models/`` and are checked against
``models/manifest.json``; nothing is downloaded at run time.
"""

from sohoa.ocr.engine import OcrEngine, prepare_page
from sohoa.ocr.page import PageText, TextLine

__all__ = ["OcrEngine", "PageText", "TextLine", "prepare_page"]
