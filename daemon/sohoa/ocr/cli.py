"""The ``sohoa ocr`` subcommand: recognize page images and print their text."""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sohoa.config import OcrConfig
from sohoa.errors import ImageError
from sohoa.i18n import N_, gettext as _
from sohoa.ocr.engine import OcrEngine
from sohoa.ocr.page import PageText

log = logging.getLogger(__name__)

FORMATS = ("text", "json", "hocr")
# Separates pages in text output, as Tesseract does.
PAGE_SEPARATOR = "\f"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ocr`` subcommand to the ``sohoa`` command's subparsers."""
    defaults = OcrConfig()
    parser = subparsers.add_parser("ocr", help=_("recognize the text of page images with the on-box models"))
    parser.add_argument("images", nargs="+", metavar="IMAGE", help=_("page image file (PNG, TIFF, JPEG, PNM)"))
    parser.add_argument("--format", choices=FORMATS, default="text", help=_("output format (default: text)"))
    parser.add_argument(
        "--threads", type=_positive_int, default=defaults.threads, help=_("CPU threads per model (default: {threads})").format(threads=defaults.threads)
    )
    parser.add_argument(
        "--models", type=Path, default=defaults.models_dir, help=_("folder with manifest.json and the model files (default: {path})").format(path=defaults.models_dir)
    )
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(_("--threads must be 1 or more"))
    return value


def run(args: argparse.Namespace) -> int:
    """Recognize each image and print the results; return 0, or ImageError's exit status if any image failed."""
    engine = OcrEngine.load(args.models, threads=args.threads)

    pages: list[tuple[Path, PageText]] = []
    failed = 0
    for name in args.images:
        path = Path(name)
        try:
            pages.append((path, engine.recognize(open_image(path))))
        except ImageError as exc:
            log.error("OCR of %s failed: %s", path, exc)
            print(_("Error: {message}").format(message=exc.user_message()), file=sys.stderr)
            failed += 1

    sys.stdout.write(format_pages(pages, args.format, engine.versions))
    return ImageError.exit_status if failed else 0


def open_image(path: Path) -> Image.Image:
    """Open an image file, translating Pillow's errors into ImageError."""
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError as exc:
        raise ImageError(N_("Image file {path} not found"), path=path) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(N_("File {path} is not an image format that can be read. Use PNG, TIFF, JPEG or PNM"), path=path) from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(N_("Image file {path} is damaged or truncated: {detail}. Rescan the page"), path=path, detail=exc) from exc
    return image


def format_pages(pages: list[tuple[Path, PageText]], output_format: str, versions: dict[str, str]) -> str:
    if output_format == "json":
        document = {
            "models": versions,
            "pages": [{"image": str(path), **page.to_dict()} for path, page in pages],
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if output_format == "hocr":
        return format_hocr(pages)
    if not pages:
        return ""
    return f"\n{PAGE_SEPARATOR}\n".join(page.text for _, page in pages) + "\n"


def format_hocr(pages: list[tuple[Path, PageText]]) -> str:
    """Return an hOCR 1.2 document with one ``ocr_page`` per image and one ``ocr_line`` per line."""
    body = []
    for page_number, (path, page) in enumerate(pages, start=1):
        title = f'image "{path.name}"; bbox 0 0 {page.width} {page.height}; ppageno {page_number - 1}'
        body.append(f'  <div class="ocr_page" id="page_{page_number}" title="{html.escape(title)}">')
        for line_number, line in enumerate(page.lines, start=1):
            x0, y0, x1, y1 = line.box
            line_title = f"bbox {x0} {y0} {x1} {y1}; x_wconf {round(line.confidence * 100)}"
            body.append(
                f'   <span class="ocr_line" id="line_{page_number}_{line_number}" title="{line_title}">'
                f"{html.escape(line.text)}</span>"
            )
        body.append("  </div>")
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="vi" lang="vi">',
        " <head>",
        "  <title></title>",
        '  <meta http-equiv="Content-Type" content="text/html; charset=utf-8" />',
        '  <meta name="ocr-system" content="sohoa" />',
        '  <meta name="ocr-capabilities" content="ocr_page ocr_line" />',
        " </head>",
        " <body>",
        *body,
        " </body>",
        "</html>",
    ]
    return "\n".join(lines) + "\n"
