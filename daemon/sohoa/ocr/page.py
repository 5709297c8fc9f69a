"""The result of recognizing one page: text lines in reading order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sohoa.errors import OcrError
from sohoa.i18n import N_


@dataclass(frozen=True)
class TextLine:
    """One recognized line.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the input image, top-left
    origin, x1 and y1 exclusive. It encloses the line's ink with the margin
    the detector adds, up to about a third of the text height on each side.
    ``confidence`` is the mean probability of the recognized characters,
    from 0 to 1.
    """

    text: str
    box: tuple[int, int, int, int]
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": list(self.box), "confidence": self.confidence}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextLine:
        try:
            x0, y0, x1, y1 = (int(value) for value in data["box"])
            return cls(text=str(data["text"]), box=(x0, y0, x1, y1), confidence=float(data["confidence"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise OcrError(N_("Invalid OCR line record {record!r}: {detail}"), record=data, detail=exc) from exc


@dataclass(frozen=True)
class PageText:
    """Recognized text of one page image, lines in reading order."""

    width: int
    height: int
    lines: tuple[TextLine, ...]

    @property
    def text(self) -> str:
        """Lines joined with newlines."""
        return "\n".join(line.text for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dictionary that :meth:`from_dict` reads back."""
        return {"width": self.width, "height": self.height, "lines": [line.to_dict() for line in self.lines]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PageText:
        try:
            lines = tuple(TextLine.from_dict(line) for line in data["lines"])
            return cls(width=int(data["width"]), height=int(data["height"]), lines=lines)
        except (KeyError, TypeError, ValueError) as exc:
            raise OcrError(N_("Invalid OCR page record: {detail}"), detail=exc) from exc
