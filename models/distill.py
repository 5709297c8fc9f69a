#!/usr/bin/env python3
"""Retrain AsterNet's convolutions for ReLU by distillation from the original model.

Usage, from the repository root. The script needs torch and onnx2torch,
which the daemon does not, and the committed weights were trained with
these versions:

    pip install torch==2.14.1 torchvision==0.29.1 onnx2torch==1.5.15 onnx
    PYTHONPATH=daemon python models/distill.py [--pages 240] [--steps 1800] [--output models/asternet_vi_relu.npz]

Why: in the int8 recognizer, the SiLU activations took a third of the time,
because onnxruntime runs each one as two passes over the tensor (a sigmoid
table and a multiplication). A ReLU costs nothing, as it folds into the int8
convolution before it. Swapping the activation alone breaks the model, so
the convolution weights are retrained to give the original backbone's
output. The LSTM layers and the language head stay as they are.

Steps:
1. Teacher: AsterNet from the asterocr wheel, with the rewrites of graph.py
   that keep its outputs. Student: the same graph with SiLU replaced by ReLU
   after every convolution and residual addition, starting from the
   teacher's weights. Only the backbone (image to ``[N, 512, 1, T]``
   features) of each is trained or run.
2. Training lines: seeded pages of random Vietnamese syllables, numbers,
   dates and document numbers in the layout of a decision, in Liberation
   Serif and Noto Serif at 11 to 14 pt. They are left clean, degraded like an
   office scan, or degraded like a poor copy, some with a red seal. The
   lines are found by the wheel's float text detector and cut and scaled
   exactly as the engine does. None of the text of the benchmark pages
   (tests/benchmarks/ocr_benchmark.py) is used.
3. Distillation: mean squared error between the student's and the teacher's
   backbone outputs on windows of at most 256 px of those lines, AdamW with
   a one-cycle learning rate. The script prints the loss on held-out lines.
4. The convolution weights are written as float16 into an ``.npz`` file,
   keyed by ONNX node name, with the source model's SHA-256 and the
   settings. build.py reads them back as float32.

Torch on the CPU is not bit-for-bit reproducible across machines, so a new
run gives weights that differ slightly. The committed file is the one the
models in this folder were built from. On a 2-core x86 VM the default run
took 52 minutes: 8 to render the pages and 43 to train.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

log = logging.getLogger("models.distill")

MODELS_DIR = Path(__file__).resolve().parent
OUTPUT = MODELS_DIR / "asternet_vi_relu.npz"
SEED = 20261205
HELD_OUT_LINES = 200
BATCH_SIZE = 12
WINDOW_WIDTH = 256
MAX_LEARNING_RATE = 6e-4
# The weights are written every this many steps, so a long run can be checked before it ends.
CHECKPOINT_STEPS = 300

ONSETS = "b c ch d đ g gh gi h k kh l m n ng ngh nh p ph qu r s t th tr v x".split() + [""] * 4
RHYMES = (
    "a ai ao au ay an ang anh at ac ach am ăn ăng ăt ăc ăm âm ân âng âu ây ât âc e em en eng eo et ec ê êm ên "
    "ênh êt êu êch i ia im in inh it ich iu iêm iên iêng iêt iêu iêc o oa oai oan oang oanh oat oac oe oi om on "
    "ong ot oc ô ôi ôm ôn ông ôt ôc ơ ơi ơm ơn ơt u ua uân uât ui um un ung ut uc uy uyên uyêt uôi uôn uông uôt "
    "uôc ư ưa ưi ưng ưu ươi ươn ương ươc ươt ươu ưc ưt y yên yêu"
).split()
# Acute, grave, hook above, tilde and dot below. The empty string is the level tone.
TONES = ("", "\u0301", "\u0300", "\u0309", "\u0303", "\u0323")
MARKED_VOWELS = "ăâêôơư"
DOCUMENT_SUFFIXES = ("QĐ", "TT", "NĐ-CP", "QĐ-UBND", "TT-BGDĐT", "CT", "KH", "TB")
LIST_MARKS = ("-", "+", "Điều", "Khoản", "a)", "b)", "1.", "2.")


# --- training text ----------------------------------------------------------


def syllable(rng: random.Random) -> str:
    """Return a random Vietnamese-looking syllable with its tone mark on a plausible vowel."""
    text = rng.choice(ONSETS) + rng.choice(RHYMES)
    tone = rng.choice(TONES)
    vowels = [index for index, char in enumerate(text) if unicodedata.normalize("NFD", char)[0] in "aeiouy"]
    if not tone or not vowels:
        return text
    marked = [index for index in vowels if text[index] in MARKED_VOWELS]
    if marked:
        position = marked[-1]
    elif len(vowels) >= 2 and vowels[-1] == len(text) - 1:
        position = vowels[-2]
    else:
        position = vowels[-1] if len(vowels) == 1 else vowels[1]
    return unicodedata.normalize("NFC", text[: position + 1] + tone + text[position + 1 :])


def word(rng: random.Random) -> str:
    """Return a syllable, a number, a date or a document number, sometimes capitalized or punctuated."""
    draw = rng.random()
    if draw < 0.06:
        return str(rng.randint(1, 9999))
    if draw < 0.09:
        return f"{rng.randint(1, 31):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}"
    if draw < 0.11:
        return f"{rng.randint(1, 999)}/{rng.randint(2000, 2030)}/{rng.choice(DOCUMENT_SUFFIXES)}"
    text = syllable(rng)
    draw = rng.random()
    if draw < 0.12:
        text = text.capitalize()
    elif draw < 0.16:
        text = text.upper()
    if rng.random() < 0.08:
        text += rng.choice(",.;:")
    if rng.random() < 0.02:
        text = f"({text})"
    return text


def paragraph(rng: random.Random) -> str:
    words = [word(rng) for _ in range(rng.randint(6, 40))]
    if rng.random() < 0.15:
        words = [text.upper() for text in words[:8]]
    if rng.random() < 0.2:
        words.insert(0, rng.choice(LIST_MARKS))
    return " ".join(words)


# --- training lines ---------------------------------------------------------


def render_lines(page_count: int, sources: dict, seed: int) -> list[np.ndarray]:
    """Render, degrade and cut ``page_count`` pages into the recognizer's grey 32 px line chunks."""
    from sohoa.ocr.engine import OcrEngine, prepare_page
    from sohoa.ocr.models import open_session, read_charset
    from sohoa.testbed import ocr as testbed

    rng = random.Random(seed)
    threads = len(os.sched_getaffinity(0))
    engine = OcrEngine(
        open_session(sources["detector"].path, threads),
        open_session(sources["recognizer"].path, threads),
        read_charset(sources["charset"].path),
        {},
    )
    chunks: list[np.ndarray] = []
    for number in range(page_count):
        body = tuple(paragraph(rng) for _ in range(rng.randint(8, 14)))
        family = rng.choice(("liberation", "liberation", "noto"))
        page = testbed.render_decision_page(family=family, body=body, size_pt=rng.choice((11.0, 12.0, 13.0, 14.0)))
        quality = rng.random()
        if quality < 0.25:
            image = page.image
        elif quality < 0.65:
            image = testbed.degrade_like_office_scan(page.image, seed=seed + number)
        else:
            seal = (rng.randint(1200, 2000), rng.randint(2200, 3200)) if rng.random() < 0.5 else None
            image = testbed.degrade_like_poor_copy(page.image, seed=seed + number, seal_center=seal)
        chunks.extend(np.ascontiguousarray(line) for line in engine.line_images(prepare_page(image)))
        if (number + 1) % 20 == 0:
            log.info("Rendered %d of %d pages, %d line chunks", number + 1, page_count, len(chunks))
    return chunks


def to_batch(images: list[np.ndarray], rng: random.Random):
    """Cut a random window of at most WINDOW_WIDTH from each line and pad them as recognition.prepare_batch does."""
    import torch

    from sohoa.ocr import recognition

    windows = []
    for image in images:
        width = image.shape[1]
        if width > WINDOW_WIDTH:
            start = rng.randint(0, width - WINDOW_WIDTH)
            image = image[:, start : start + WINDOW_WIDTH]
        windows.append(image)
    # The teacher and student graphs still read AsterNet's three equal channels.
    return torch.from_numpy(recognition.prepare_batch(windows, channels=3))


# --- distillation -----------------------------------------------------------


def backbone_models(source: Path, work: Path):
    """Return the teacher's and the student's backbones as torch modules, and the student's ONNX graph."""
    import onnx
    import onnx2torch
    import recognizer_graph as graph

    teacher_graph = onnx.load(str(source))
    graph.simplify_squeeze_excitation(teacher_graph)
    graph.squeeze_backbone_height(teacher_graph)
    student_graph = onnx.load(str(source))
    graph.simplify_squeeze_excitation(student_graph)
    graph.squeeze_backbone_height(student_graph)
    replaced = graph.silu_to_relu(student_graph)
    log.info("Replaced %d SiLU activations by ReLU", replaced)

    modules = []
    for name, model in (("teacher", teacher_graph), ("student", student_graph)):
        full = work / f"{name}.onnx"
        backbone = work / f"{name}-backbone.onnx"
        onnx.save(model, str(full))
        onnx.utils.extract_model(str(full), str(backbone), ["images"], [graph.BACKBONE_OUTPUT])
        modules.append(onnx2torch.convert(str(backbone)))
    return modules[0], modules[1], student_graph


def distill(teacher, student, lines: list[np.ndarray], steps: int, seed: int, checkpoint=None) -> float:
    """Train the student's convolutions on ``lines`` and return the final held-out loss, relative to the features' variance.

    Every CHECKPOINT_STEPS steps, ``checkpoint(loss)`` is called with the held-out loss at that step.
    """
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    rng.shuffle(lines)
    held_out, training = lines[:HELD_OUT_LINES], lines[HELD_OUT_LINES:]
    held_batches = [to_batch(held_out[start : start + BATCH_SIZE], random.Random(start)) for start in range(0, len(held_out), BATCH_SIZE)]

    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    parameters = [parameter for parameter in student.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=MAX_LEARNING_RATE, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LEARNING_RATE, total_steps=steps, pct_start=0.05)

    def held_out_loss() -> float:
        student.eval()
        error = variance = 0.0
        with torch.no_grad():
            for batch in held_batches:
                target = teacher(batch)
                error += torch.mean((student(batch) - target) ** 2).item()
                variance += target.var().item()
        student.train()
        return error / variance

    log.info("Held-out loss before training: %.4f of the feature variance", held_out_loss())
    student.train()
    started = time.monotonic()
    for step in range(1, steps + 1):
        batch = to_batch(rng.sample(training, BATCH_SIZE), rng)
        with torch.no_grad():
            target = teacher(batch)
        loss = torch.mean((student(batch) - target) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            log.info("Step %d of %d: loss %.5f, %.0f s", step, steps, loss.item(), time.monotonic() - started)
        if checkpoint is not None and step % CHECKPOINT_STEPS == 0 and step < steps:
            loss_now = held_out_loss()
            log.info("Held-out loss at step %d: %.4f of the feature variance", step, loss_now)
            checkpoint(loss_now)
    final = held_out_loss()
    log.info("Held-out loss after training: %.4f of the feature variance", final)
    return final


def student_conv_weights(student, student_graph) -> dict[str, np.ndarray]:
    """Map the trained torch convolutions back to the ONNX Conv node names of ``graph.conv_weights``."""
    import recognizer_graph as graph

    state = student.state_dict()
    weights = {}
    for key in graph.conv_weights(student_graph):
        node, suffix = key.rsplit(".", 1)
        # onnx2torch names a module after its node, without the leading slash and with dots as slashes.
        weights[key] = state[node.lstrip("/").replace(".", "/") + "." + suffix].numpy()
    return weights


def write_weights(output: Path, weights: dict[str, np.ndarray], metadata: dict) -> None:
    """Write ``weights`` as float16 with ``metadata`` (JSON) into an ``.npz`` file, atomically."""
    from sohoa.fsutil import write_atomic_with

    # npz member names may not start with a slash.
    arrays = {key.lstrip("/"): value.astype(np.float16) for key, value in weights.items()}

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            np.savez(stream, metadata=np.array(json.dumps(metadata, sort_keys=True)), **arrays)

    write_atomic_with(output, save, suffix=".npz")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=240, help="number of training pages to render (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1800, help="training steps of %d windows (default: %%(default)s)" % BATCH_SIZE)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="weights file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import build
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    sources = build.find_sources()
    source = sources["recognizer"].path
    lines = render_lines(args.pages, sources, SEED)
    log.info("Training on %d line chunks from %d pages", len(lines), args.pages)
    metadata = {
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "pages": args.pages,
        "steps": args.steps,
        "seed": SEED,
    }
    with tempfile.TemporaryDirectory(prefix="sohoa-distill-") as work_name:
        teacher, student, student_graph = backbone_models(source, Path(work_name))

        def checkpoint(loss: float) -> None:
            write_weights(args.output, student_conv_weights(student, student_graph), {**metadata, "held_out_loss": round(loss, 5)})

        loss = distill(teacher, student, lines, args.steps, SEED, checkpoint)
        metadata["held_out_loss"] = round(loss, 5)
        write_weights(args.output, student_conv_weights(student, student_graph), metadata)
    log.info("Wrote the weights to %s: %s", args.output, metadata)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(MODELS_DIR.parent / "daemon"))
    sys.path.insert(0, str(MODELS_DIR))
    sys.exit(main())
