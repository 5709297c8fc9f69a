"""Model files: the manifest, SHA-256 checks and onnxruntime sessions.

``models/manifest.json`` lists each model with its file, its SHA-256 and,
for the recognizer, the character set file. :func:`load_model_set` checks
every listed file against its digest before anything is loaded, so a
truncated copy or a swapped file stops the engine at start-up with the name
of the file, not at the first page.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime

from sohoa.errors import ModelError
from sohoa.fsutil import sha256_file
from sohoa.i18n import N_

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
DETECTOR = "detector"
RECOGNIZER = "recognizer"
REQUIRED_MODELS = (DETECTOR, RECOGNIZER)
BLANK_TOKEN = "<blank>"


@dataclass(frozen=True)
class ModelEntry:
    """One model listed in the manifest."""

    name: str
    file: str
    sha256: str
    charset_file: str | None = None
    charset_sha256: str | None = None


@dataclass(frozen=True)
class ModelSet:
    """Verified model paths and the recognizer's character set."""

    detector: Path
    recognizer: Path
    charset: tuple[str, ...]
    versions: dict[str, str]


def read_manifest(models_dir: Path) -> dict[str, ModelEntry]:
    """Read ``manifest.json`` and return its entries by model name."""
    path = models_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(N_("Model manifest {path} is missing. Run models/build.py or reinstall the models"), path=path) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(N_("Model manifest {path} cannot be read: {detail}"), path=path, detail=exc) from exc

    try:
        if data["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {data['format']!r}, expected {MANIFEST_FORMAT}")
        entries = {
            item["name"]: ModelEntry(
                name=item["name"],
                file=item["file"],
                sha256=item["sha256"].lower(),
                charset_file=item.get("charset_file"),
                charset_sha256=item.get("charset_sha256"),
            )
            for item in data["models"]
        }
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ModelError(N_("Model manifest {path} is invalid: {detail}"), path=path, detail=exc) from exc

    missing = [name for name in REQUIRED_MODELS if name not in entries]
    if missing:
        raise ModelError(N_("Model manifest {path} lists no {names} model"), path=path, names=", ".join(missing))
    return entries


def verify_file(models_dir: Path, file_name: str, expected_sha256: str) -> Path:
    """Return the path of ``file_name`` after checking its SHA-256 against the manifest."""
    path = models_dir / file_name
    try:
        actual = sha256_file(path)
    except FileNotFoundError as exc:
        raise ModelError(N_("Model file {path} is missing. Reinstall the models"), path=path) from exc
    except OSError as exc:
        raise ModelError(N_("Model file {path} cannot be read: {detail}"), path=path, detail=exc) from exc

    if actual != expected_sha256:
        raise ModelError(
            N_("Model file {path} is corrupt or replaced: SHA-256 {actual} does not match {expected} in the manifest. Reinstall the models"),
            path=path,
            actual=actual,
            expected=expected_sha256,
        )
    return path


def read_charset(path: Path) -> tuple[str, ...]:
    """Read the recognizer's output classes; class 0 is the CTC blank."""
    try:
        chars = json.loads(path.read_text(encoding="utf-8"))["chars"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(N_("Character set {path} cannot be read: {detail}"), path=path, detail=exc) from exc
    if not chars or chars[0] != BLANK_TOKEN or not all(isinstance(char, str) for char in chars):
        raise ModelError(N_("Character set {path} is invalid: class 0 must be {blank}"), path=path, blank=BLANK_TOKEN)
    return tuple(chars)


def load_model_set(models_dir: Path) -> ModelSet:
    """Verify every file the manifest lists and return their paths."""
    entries = read_manifest(models_dir)
    detector = entries[DETECTOR]
    recognizer = entries[RECOGNIZER]
    if not recognizer.charset_file or not recognizer.charset_sha256:
        raise ModelError(N_("Model manifest in {path} names no character set for the recognizer"), path=models_dir)

    charset_path = verify_file(models_dir, recognizer.charset_file, recognizer.charset_sha256.lower())
    return ModelSet(
        detector=verify_file(models_dir, detector.file, detector.sha256),
        recognizer=verify_file(models_dir, recognizer.file, recognizer.sha256),
        charset=read_charset(charset_path),
        versions={name: entry.sha256[:12] for name, entry in sorted(entries.items())},
    )


def open_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """Load one model into an onnxruntime CPU session with ``threads`` intra-op threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    # Input shapes change with every page and line batch, so an arena and
    # memory patterns keep the largest allocation of any run and grow the
    # process by hundreds of megabytes without making it faster.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    # Idle pool threads sleep instead of spinning, because with more threads
    # than free cores spinning threads take the CPU from the working ones.
    # At 4 threads on 2 cores a page took 5.7 s with spinning and 2.2 s
    # without. At 2 threads both took 1.7 s (tests/benchmarks/ocr_benchmark.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise ModelError(N_("Model file {path} cannot be loaded by onnxruntime: {detail}"), path=path, detail=exc) from exc
