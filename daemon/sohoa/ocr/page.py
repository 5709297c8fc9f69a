"""The result of recognizing one page: text lines in reading order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from sohoa.errors import OcrError
from sohoa.i18n import N_

ROTATIONS = (0, 90, 180, 270)
# Lossless turns, counterclockwise like Image.rotate(degrees, expand=True).
UPRIGHT_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class TextLine:
    """One recognized line.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the upright page image
    (the input turned by :attr:`PageText.rotation`), top-left origin, x1 and y1 exclusive. It encloses the line's ink with the margin
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
    """Recognized text of one page image, lines in reading order.

    ``rotation`` is how many degrees (0, 90, 180 or 270) the input image was
    turned counterclockwise to make the page upright, the sense of Pillow's
    ``Image.rotate``. ``width``, ``height`` and the line boxes refer to that
    upright image, so code that places the text over the image turns it first
    (see :meth:`upright`).
    """

    width: int
    height: int
    lines: tuple[TextLine, ...]
    rotation: int = 0

    def __post_init__(self) -> None:
        if self.rotation not in ROTATIONS:
            raise OcrError(N_("Invalid page rotation {rotation}; expected one of 0, 90, 180, 270"), rotation=self.rotation)

    def upright(self, image: Image.Image) -> Image.Image:
        """Return ``image``, the page that was recognized, turned upright so the line boxes fit it."""
        if self.rotation == 0:
            return image
        return image.transpose(UPRIGHT_TRANSPOSE[self.rotation])

    @property
    def text(self) -> str:
        """Lines joined with newlines."""
        return "\n".join(line.text for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dictionary that :meth:`from_dict` reads back."""
        return {
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "lines": [line.to_dict() for line in self.lines],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PageText:
        """Read a :meth:`to_dict` record; a record without ``rotation``, written before it existed, is upright."""
        try:
            lines = tuple(TextLine.from_dict(line) for line in data["lines"])
            rotation = int(data.get("rotation", 0))
            return cls(width=int(data["width"]), height=int(data["height"]), lines=lines, rotation=rotation)
        except (KeyError, TypeError, ValueError) as exc:
            raise OcrError(N_("Invalid OCR page record: {detail}"), detail=exc) from exc
