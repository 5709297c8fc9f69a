"""Tests of models/build.py's recognizer rewrites and distilled weights.

They need the ``onnx`` package and the asterocr wheel that ships the source
recognizer (the test extra and provisioning/setup-dev.sh --test install both).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "models"

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def build(load_models_module):
    return load_models_module("build")


@pytest.fixture(scope="module")
def graph(load_models_module):
    return load_models_module("recognizer_graph")


@pytest.fixture(scope="module")
def source(build) -> Path:
    if importlib.util.find_spec("asterocr") is None:
        pytest.skip("the asterocr wheel that ships the source recognizer is not installed")
    return build.find_sources()["recognizer"].path


@pytest.fixture(scope="module")
def lines() -> np.ndarray:
    """Three rendered-like line images: white with dark strokes, as prepare_batch feeds them."""
    rng = np.random.default_rng(7)
    batch = np.ones((3, 3, 32, 240), dtype=np.float32)
    for row in range(3):
        for _ in range(40):
            x, y = rng.integers(4, 230), rng.integers(6, 24)
            batch[row, :, y : y + 3, x : x + 2] = 0.1
    return batch


def run(model, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_exact_rewrites_keep_output(graph, source, lines):
    original = onnx.load(str(source))
    rewritten = onnx.load(str(source))

    assert graph.simplify_squeeze_excitation(rewritten) == 7
    graph.squeeze_backbone_height(rewritten)

    operators = {node.op_type for node in rewritten.graph.node}
    assert "Expand" not in operators
    assert not any(node.name == graph.BACKBONE_IF for node in rewritten.graph.node)
    np.testing.assert_allclose(run(rewritten, lines), run(original, lines), atol=1e-4)


def test_grey_input_matches_three_equal_channels(graph, source, lines):
    rgb = onnx.load(str(source))
    grey = onnx.load(str(source))

    graph.read_grey_input(grey)

    assert grey.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1
    assert not any(node.name in (graph.STEM_HIGH_PASS, graph.STEM_PROJECTION) for node in grey.graph.node)
    np.testing.assert_allclose(run(grey, lines[:, :1]), run(rgb, lines), atol=1e-4)


def test_silu_to_relu_keeps_se_gates(graph, source):
    model = onnx.load(str(source))
    sigmoids_before = sum(1 for node in model.graph.node if node.op_type == "Sigmoid")

    replaced = graph.silu_to_relu(model)

    sigmoids_after = sum(1 for node in model.graph.node if node.op_type == "Sigmoid")
    assert replaced == sum(1 for node in model.graph.node if node.op_type == "Relu") > 0
    assert sigmoids_before - sigmoids_after == replaced
    # The SE blocks keep their gates and their SiLU between the two fully connected layers.
    assert sigmoids_after >= 14


def test_set_conv_weights_round_trip(graph, source):
    model = onnx.load(str(source))
    weights = {key: value * 0.5 for key, value in graph.conv_weights(model).items()}

    graph.set_conv_weights(model, weights)

    for key, value in graph.conv_weights(model).items():
        np.testing.assert_array_equal(value, weights[key])


def test_set_conv_weights_rejects_missing_tensor(graph, source):
    model = onnx.load(str(source))
    weights = graph.conv_weights(model)
    del weights[next(iter(weights))]

    with pytest.raises(ValueError, match="missing"):
        graph.set_conv_weights(model, weights)


def test_distilled_weights_fit_source(build, source):
    weights = build.read_distilled_weights(build.DISTILLED_WEIGHTS, source)

    assert all(value.dtype == np.float32 for value in weights.values())
    manifest = json.loads((MODELS_DIR / "manifest.json").read_text(encoding="utf-8"))
    recognizer = next(model for model in manifest["models"] if model["name"] == "recognizer")
    assert recognizer["distilled_weights"]["sha256"] == build.sha256_of(build.DISTILLED_WEIGHTS)


def test_weights_of_other_source_rejected(build, tmp_path):
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the asterocr recognizer")

    with pytest.raises(ValueError, match="distilled from another recognizer"):
        build.read_distilled_weights(build.DISTILLED_WEIGHTS, other)
