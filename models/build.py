#!/usr/bin/env python3
"""Build the int8 OCR models in this folder from the installed rapidocr and asterocr wheels.

Usage (from the repository root, with the development virtualenv):

    PYTHONPATH=daemon python models/build.py [--output models] [--pages 4]

Steps:
1. Copy the float models out of the wheels: rapidocr's PP-OCRv6 small text
   detector and asterocr's AsterNet Vietnamese line recognizer with its
   character set.
2. Rewrite the recognizer (recognizer_graph.py). Dropping the shape
   arithmetic of its squeeze-and-excitation blocks and of its backbone's
   last axis keeps its outputs. SiLU is replaced by ReLU after its
   convolutions, and the convolution weights by the distilled ones in
   ``asternet_vi_relu.npz``, which distill.py trains for ReLU from the
   original model. Last, the model is made to read one grey channel. The
   result is the float recognizer the int8 one is built from.
3. Render calibration pages of Vietnamese administrative text (seeded, so
   every run feeds the same data) and run them through the float models with
   the engine's own pre-processing, collecting detector and recognizer inputs.
4. Quantize both models statically to int8 QDQ with those inputs. Static
   quantization is used because dynamic (weights-only) int8 made these
   convolution-heavy models slower than fp32. The detector is first converted
   from opset 11 to 13 and pre-processed without symbolic shape inference,
   because otherwise the quantized model does not load. Static QDQ leaves the
   recognizer's two LSTM layers in float, so their weights are then quantized
   dynamically (int8 weights, activations quantized at run time). That made
   the recognizer 9 MB smaller and its runs about 7% faster at the same
   error rate on the benchmark pages.
5. Write the models, the licence notices and ``manifest.json`` (files,
   SHA-256, sources, licences, input shapes) atomically.

If quantizing a model fails, its float model is written instead and the
manifest records ``"precision": "fp32"`` for it.

Build-time dependency: the ``onnx`` package (not needed by the daemon).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("models.build")

MODELS_DIR = Path(__file__).resolve().parent
DETECTOR_STEM = "ppocrv6_det_small"
RECOGNIZER_STEM = "asternet_vi_relu"
# Convolution weights of the ReLU recognizer, written by distill.py.
DISTILLED_WEIGHTS = MODELS_DIR / "asternet_vi_relu.npz"
CHARSET_FILE = "asternet_vi_charset.json"
DETECTOR_OPSET = 13
# The recognizer stem's high-pass branch, fused into one 3x3 convolution by
# recognizer_graph.read_grey_input, stays in float. In int8 its small signed
# output lost enough precision to change letters at line ends: one sample
# page read at 1.25-1.50% CER against 0.25% in float.
RECOGNIZER_FLOAT_NODES = ("/backbone/stem/high_pass/Conv",)
# Recognizer batches used for calibration; more adds build time, not accuracy.
MAX_RECOGNIZER_CALIBRATION_BATCHES = 48


@dataclass(frozen=True)
class Source:
    """A model file inside an installed wheel."""

    package: str
    version: str
    path: Path
    license: str
    license_files: tuple[Path, ...]


def find_sources() -> dict[str, Source]:
    """Locate the float models and their licence files in the installed wheels."""
    rapidocr = importlib.metadata.distribution("rapidocr")
    asterocr = importlib.metadata.distribution("asterocr")
    rapidocr_licenses = tuple(
        Path(rapidocr.locate_file(file)) for file in rapidocr.files or () if file.parent.name == "licenses"
    )
    return {
        "detector": Source(
            package="rapidocr",
            version=rapidocr.version,
            path=Path(rapidocr.locate_file("rapidocr/models/PP-OCRv6_det_small.onnx")),
            license=rapidocr.metadata.get("License-Expression") or rapidocr.metadata["License"],
            license_files=rapidocr_licenses,
        ),
        "recognizer": Source(
            package="asterocr",
            version=asterocr.version,
            path=Path(asterocr.locate_file("asterocr/assets/asternet.onnx")),
            license=asterocr.metadata["License"],
            license_files=(),
        ),
        "charset": Source(
            package="asterocr",
            version=asterocr.version,
            path=Path(asterocr.locate_file("asterocr/assets/vocab.json")),
            license=asterocr.metadata["License"],
            license_files=(),
        ),
    }


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- float recognizer -------------------------------------------------------


def read_distilled_weights(path: Path, source: Path) -> dict[str, np.ndarray]:
    """Read distill.py's convolution weights as float32, checking they were trained from ``source``."""
    with np.load(path) as archive:
        metadata = json.loads(str(archive["metadata"]))
        weights = {"/" + key: archive[key].astype(np.float32) for key in archive.files if key != "metadata"}
    if metadata["source_sha256"] != sha256_of(source):
        raise ValueError(f"{path.name} was distilled from another recognizer (SHA-256 {metadata['source_sha256']}) than {source}")
    return weights


def write_float_recognizer(source: Path, weights: Path, target: Path) -> None:
    """Write the float ReLU recognizer: ``source`` rewritten by recognizer_graph.py, with the distilled convolution weights."""
    import onnx

    if str(MODELS_DIR) not in sys.path:
        sys.path.insert(0, str(MODELS_DIR))
    import recognizer_graph as graph

    model = onnx.load(str(source))
    graph.simplify_squeeze_excitation(model)
    graph.squeeze_backbone_height(model)
    graph.silu_to_relu(model)
    graph.set_conv_weights(model, read_distilled_weights(weights, source))
    graph.read_grey_input(model)
    onnx.checker.check_model(model)
    write_atomic_model(target, model)


def write_atomic_model(target: Path, model) -> None:
    import onnx

    from sohoa.fsutil import write_atomic_with

    write_atomic_with(target, lambda temporary: onnx.save(model, str(temporary)), suffix=target.suffix)


# --- calibration data -------------------------------------------------------


def render_calibration_images(count: int) -> list[np.ndarray]:
    """Render ``count`` pages and return them prepared as the engine prepares a scan."""
    from sohoa.ocr import prepare_page
    from sohoa.testbed.ocr import calibration_pages

    return [prepare_page(page) for page in calibration_pages(count)]


def collect_calibration_inputs(
    pages: list[np.ndarray], detector_path: Path, recognizer_path: Path, charset: tuple[str, ...]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run the float models on ``pages`` and return detector and recognizer input tensors."""
    from sohoa.ocr.engine import OcrEngine
    from sohoa.ocr.models import open_session

    engine = OcrEngine(open_session(detector_path, 2), open_session(recognizer_path, 2), charset, {})
    detector_inputs, recognizer_inputs = [], []
    for page in pages:
        detector_inputs.append(engine.detector_input(page))
        recognizer_inputs.extend(engine.recognizer_inputs(page))
    step = max(1, len(recognizer_inputs) // MAX_RECOGNIZER_CALIBRATION_BATCHES)
    return detector_inputs, recognizer_inputs[::step][:MAX_RECOGNIZER_CALIBRATION_BATCHES]


class TensorReader:
    """A calibration data reader over a list of tensors for one input name."""

    def __init__(self, input_name: str, tensors: list[np.ndarray]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter([{input_name: tensor} for tensor in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


# --- quantization -----------------------------------------------------------


def quantize(
    source: Path,
    target: Path,
    tensors: list[np.ndarray],
    work: Path,
    convert_opset: int | None,
    lstm_weights: bool = False,
    float_nodes: tuple[str, ...] = (),
) -> None:
    """Quantize ``source`` to int8 QDQ at ``target``, calibrated on ``tensors``, leaving ``float_nodes`` in float.

    With ``lstm_weights``, the LSTM nodes that static QDQ leaves in float
    are then quantized dynamically (int8 weights).
    """
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    if convert_opset is not None:
        model = version_converter.convert_version(model, convert_opset)
    converted = work / f"{target.stem}.converted.onnx"
    onnx.save(model, str(converted))

    prepared = work / f"{target.stem}.prepared.onnx"
    quant_pre_process(str(converted), str(prepared), skip_symbolic_shape=True)

    input_name = model.graph.input[0].name

    class Reader(TensorReader, CalibrationDataReader):
        pass

    static_target = work / f"{target.stem}.static.onnx" if lstm_weights else target
    quantize_static(
        str(prepared),
        str(static_target),
        Reader(input_name, tensors),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=list(float_nodes),
    )
    if lstm_weights:
        quantize_dynamic(str(static_target), str(target), op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)


def build_model(
    name: str,
    source: Path,
    output: Path,
    stem: str,
    tensors: list[np.ndarray],
    work: Path,
    opset: int | None,
    lstm_weights: bool = False,
    float_nodes: tuple[str, ...] = (),
) -> tuple[Path, str]:
    """Write ``<stem>.int8.onnx`` into ``output``, or ``<stem>.fp32.onnx`` if quantizing fails.

    Returns the written path and its precision.
    """
    staged = work / f"{stem}.int8.onnx"
    try:
        quantize(source, staged, tensors, work, opset, lstm_weights, float_nodes)
        check_loads(staged)
        precision = "int8-qdq, lstm int8-dynamic" if lstm_weights else "int8-qdq"
        if float_nodes:
            precision += f", {len(float_nodes)} nodes fp32"
    except Exception:  # the quantization tool chain raises many unrelated types
        log.exception("Quantizing the %s failed; writing the float model instead", name)
        staged = work / f"{stem}.fp32.onnx"
        shutil.copyfile(source, staged)
        precision = "fp32"
    target = output / staged.name
    write_file(target, staged)
    return target, precision


def check_loads(path: Path) -> None:
    import onnxruntime

    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --- output -----------------------------------------------------------------


def write_file(target: Path, source: Path) -> None:
    from sohoa.fsutil import write_atomic_with

    write_atomic_with(target, lambda temporary: shutil.copyfile(source, temporary), suffix=target.suffix)


def write_text(target: Path, text: str) -> None:
    from sohoa.fsutil import write_atomic

    write_atomic(target, text.encode("utf-8"))


def input_shapes(path: Path) -> dict[str, list[int | str]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {item.name: [dim if isinstance(dim, int) else str(dim) for dim in item.shape] for item in session.get_inputs()}


def write_licenses(output: Path, sources: dict[str, Source]) -> dict[str, list[str]]:
    """Copy the detector's licence files and write the recognizer's notice; return name -> file."""
    license_dir = output / "LICENSES"
    detector = sources["detector"]
    for license_file in detector.license_files:
        write_file(license_dir / f"rapidocr-{license_file.name}", license_file)

    recognizer = sources["recognizer"]
    notice = (
        f"AsterNet Vietnamese line recognizer (asternet.onnx, vocab.json)\n"
        f"Source: the {recognizer.package} {recognizer.version} wheel from PyPI, files asterocr/assets/.\n"
        f"Licence: {recognizer.license}, as declared in the package metadata (License field).\n"
        "Author: asterxlabs <contact@asterxlabs.com>; project https://huggingface.co/asterxlabs/asternet-vietnamese-ocr\n"
        "The wheel ships no licence text and does not describe its training data, so the\n"
        "copyright line of the MIT licence is not known. Confirm the licence with the author\n"
        "before redistributing this model outside the project.\n"
        "\n"
        f"The recognizer in this folder ({RECOGNIZER_STEM}.int8.onnx) is derived from it: the graph\n"
        "is rewritten by models/recognizer_graph.py, its activations after convolutions are ReLU\n"
        f"instead of SiLU, and its convolution weights ({DISTILLED_WEIGHTS.name}) were retrained by\n"
        "models/distill.py to reproduce the original backbone's output. The LSTM layers, the\n"
        "language head and the character set are the original ones.\n"
    )
    write_text(license_dir / "asterocr-NOTICE.txt", notice)
    return {
        "detector": [f"LICENSES/rapidocr-{path.name}" for path in detector.license_files],
        "recognizer": ["LICENSES/asterocr-NOTICE.txt"],
    }


def manifest_entry(name: str, path: Path, source: Source, precision: str, license_files: list[str]) -> dict:
    entry = {
        "name": name,
        "file": path.name,
        "sha256": sha256_of(path),
        "size_bytes": path.stat().st_size,
        "precision": precision,
        "inputs": input_shapes(path),
        "source": {
            "package": source.package,
            "version": source.version,
            "file": str(source.path.relative_to(source.path.parents[2])),
            "sha256": sha256_of(source.path),
        },
        "license": source.license,
        "license_files": license_files,
    }
    if name == "recognizer":
        entry["distilled_weights"] = {"file": DISTILLED_WEIGHTS.name, "sha256": sha256_of(DISTILLED_WEIGHTS)}
    return entry


def write_manifest(output: Path, models: list[dict]) -> None:
    manifest = {"format": 1, "built_by": "models/build.py", "models": models}
    write_text(output / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def write_float_models(output: Path) -> None:
    """Copy the float models and their character set into ``output`` with a manifest.

    Tests compare the int8 models against these.
    """
    sources = find_sources()
    detector = output / f"{DETECTOR_STEM}.fp32.onnx"
    recognizer = output / f"{RECOGNIZER_STEM}.fp32.onnx"
    charset = output / CHARSET_FILE
    for target, key in ((detector, "detector"), (charset, "charset")):
        write_file(target, sources[key].path)
    write_float_recognizer(sources["recognizer"].path, DISTILLED_WEIGHTS, recognizer)
    licenses = write_licenses(output, sources)
    models = [
        manifest_entry("detector", detector, sources["detector"], "fp32", licenses["detector"]),
        manifest_entry("recognizer", recognizer, sources["recognizer"], "fp32", licenses["recognizer"]),
    ]
    models[1].update(charset_file=charset.name, charset_sha256=sha256_of(charset))
    write_manifest(output, models)


def build(output: Path, page_count: int) -> list[dict]:
    """Build the int8 models into ``output`` and return the manifest entries."""
    from sohoa.ocr.models import read_charset

    sources = find_sources()
    for source in sources.values():
        log.info("Source %s %s: %s", source.package, source.version, source.path)

    with tempfile.TemporaryDirectory(prefix="sohoa-models-") as work_name:
        work = Path(work_name)
        charset = read_charset(sources["charset"].path)
        float_recognizer = work / f"{RECOGNIZER_STEM}.fp32.onnx"
        write_float_recognizer(sources["recognizer"].path, DISTILLED_WEIGHTS, float_recognizer)
        log.info("Rendering %d calibration pages", page_count)
        pages = render_calibration_images(page_count)
        detector_inputs, recognizer_inputs = collect_calibration_inputs(
            pages, sources["detector"].path, float_recognizer, charset
        )
        log.info("Calibrating on %d pages and %d line batches", len(detector_inputs), len(recognizer_inputs))

        detector, detector_precision = build_model(
            "detector", sources["detector"].path, output, DETECTOR_STEM, detector_inputs, work, DETECTOR_OPSET
        )
        recognizer, recognizer_precision = build_model(
            "recognizer",
            float_recognizer,
            output,
            RECOGNIZER_STEM,
            recognizer_inputs,
            work,
            None,
            lstm_weights=True,
            float_nodes=RECOGNIZER_FLOAT_NODES,
        )

    charset_path = output / CHARSET_FILE
    write_file(charset_path, sources["charset"].path)
    licenses = write_licenses(output, sources)
    models = [
        manifest_entry("detector", detector, sources["detector"], detector_precision, licenses["detector"]),
        manifest_entry("recognizer", recognizer, sources["recognizer"], recognizer_precision, licenses["recognizer"]),
    ]
    models[1].update(charset_file=charset_path.name, charset_sha256=sha256_of(charset_path))
    write_manifest(output, models)
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=MODELS_DIR, help="folder to write the models into (default: %(default)s)")
    parser.add_argument("--pages", type=int, default=4, help="number of calibration pages to render (default: %(default)s)")
    parser.add_argument("--float-only", action="store_true", help="copy the float models with a manifest, without quantizing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.float_only:
        write_float_models(args.output)
        return 0
    models = build(args.output, args.pages)
    for model in models:
        log.info("%s: %s, %s, %.1f MB", model["name"], model["file"], model["precision"], model["size_bytes"] / 1e6)
    return 0 if all(model["precision"] != "fp32" for model in models) else 2


if __name__ == "__main__":
    sys.path.insert(0, str(MODELS_DIR.parent / "daemon"))
    sys.exit(main())
