"""Rewrites of the AsterNet recognizer graph, used by build.py and distill.py.

The first three rewrites give the same outputs as the source graph (for
``read_grey_input``, as for three equal channels) and make the int8 model
cheaper:

* :func:`simplify_squeeze_excitation` drops the Shape, Gather and Expand
  nodes that each squeeze-and-excitation (SE) block uses to broadcast its
  channel weights. Mul broadcasts a ``[N, C, 1, 1]`` tensor by itself, and
  with no Shape node reading the block's activations the quantizer no
  longer has to turn them back into float.
* :func:`squeeze_backbone_height` replaces the ``If`` node that drops the
  backbone's height axis when it is 1 by a plain Squeeze. With 32-pixel
  lines the height there is always 1, and the backbone's last convolution
  can then run in int8.
* :func:`read_grey_input` makes the model read one grey channel instead of
  the three equal channels the engine fed it. The stem's main convolution
  sums its weights over the input channels. Its high-pass branch (a
  depthwise 3x3 filter, a 1x1 projection and a scalar gain) becomes one 3x3
  convolution from the grey channel.

The last one changes the model:

* :func:`silu_to_relu` replaces SiLU (``x * sigmoid(x)``) after convolutions
  and residual additions by ReLU. onnxruntime folds a ReLU into the int8
  convolution before it, while an int8 SiLU costs two passes over the
  tensor (a sigmoid table and a multiplication). The convolution weights
  must then be retrained (distill.py) for the model to read text again.
"""

from __future__ import annotations

import numpy as np

# The backbone's output: [batch, 512, 1, time], read by the LSTM layers.
BACKBONE_OUTPUT = "/backbone/layer4/layer4.3/Mul_output_0"
BACKBONE_IF = "/backbone/If"


def simplify_squeeze_excitation(model) -> int:
    """Make every SE block multiply by its ``[N, C, 1, 1]`` weights directly, and return the number of blocks changed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = _producers(graph)
    consumers = _consumers(graph)
    axes = _unique_name(graph, "se_unsqueeze_axes")
    graph.initializer.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), axes))

    replacements = {}
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "Expand" else None
        if source is None or source.op_type != "Reshape":
            continue
        # Reshape(weights, [N, C, 1, 1]) -> Unsqueeze(weights, [2, 3]), and the Expand node is dropped.
        replacements[source.name] = helper.make_node("Unsqueeze", [source.input[0], axes], [source.output[0]], name=source.name)
        for consumer in consumers.get(node.output[0], ()):
            consumer.input[:] = [source.output[0] if name == node.output[0] else name for name in consumer.input]
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "Reshape" else None
        if source is not None and source.op_type == "GlobalAveragePool":
            # Reshape(pooled, [N, C]) -> Flatten(pooled).
            replacements[node.name] = helper.make_node("Flatten", [node.input[0]], [node.output[0]], name=node.name, axis=1)

    nodes = [replacements.get(node.name, node) for node in graph.node]
    _replace_nodes(graph, nodes)
    return sum(1 for node in nodes if node.op_type == "Unsqueeze" and axes in node.input)


def squeeze_backbone_height(model) -> None:
    """Replace the backbone's ``If`` (squeeze the height axis when it is 1) by an unconditional Squeeze."""
    from onnx import helper, numpy_helper

    graph = model.graph
    axes = _unique_name(graph, "backbone_squeeze_axes")
    graph.initializer.append(numpy_helper.from_array(np.array([2], dtype=np.int64), axes))
    nodes = []
    found = False
    for node in graph.node:
        if node.op_type == "If" and node.name == BACKBONE_IF:
            nodes.append(helper.make_node("Squeeze", [BACKBONE_OUTPUT, axes], [node.output[0]], name="/backbone/Squeeze"))
            found = True
        else:
            nodes.append(node)
    if not found:
        raise ValueError(f"the recognizer graph has no {BACKBONE_IF} node")
    _replace_nodes(graph, nodes)


STEM_MAIN = "/backbone/stem/conv_main/conv_main.0/Conv"
STEM_HIGH_PASS = "/backbone/stem/Conv"
STEM_PROJECTION = "/backbone/stem/hp_proj/hp_proj.0/Conv"
STEM_GAIN = "/backbone/stem/Mul"
# The convolution that replaces the high-pass branch.
STEM_HIGH_PASS_FUSED = "/backbone/stem/high_pass/Conv"


def read_grey_input(model) -> None:
    """Make the model read ``[N, 1, H, W]`` grey images, with the same output as for three equal channels."""
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    if not {STEM_MAIN, STEM_HIGH_PASS, STEM_PROJECTION, STEM_GAIN} <= set(nodes):
        raise ValueError("the recognizer graph has no AsterNet stem")
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    main, high_pass, projection, gain = (nodes[name] for name in (STEM_MAIN, STEM_HIGH_PASS, STEM_PROJECTION, STEM_GAIN))
    image = graph.input[0]
    if list(main.input[:1]) != [image.name] or list(high_pass.input[:1]) != [image.name]:
        raise ValueError("the recognizer's stem does not read the input image directly")

    # Three equal channels: each output sums the weights of the three.
    _set_initializer(graph, main.input[1], initializers[main.input[1]].sum(axis=1, keepdims=True))

    depthwise = initializers[high_pass.input[1]]  # [channels, 1, 3, 3], no bias
    if len(high_pass.input) > 2 or depthwise.shape[1] != 1:
        raise ValueError("the stem's high-pass filter is not a depthwise convolution without bias")
    projection_weights = initializers[projection.input[1]][:, :, 0, 0]  # [out, channels]
    (scale,) = [float(initializers[name].reshape(())) for name in gain.input if name in initializers]
    fused_weights = scale * np.einsum("oc,cyx->oyx", projection_weights, depthwise[:, 0])[:, np.newaxis]
    fused_bias = scale * initializers[projection.input[2]]
    weights_name = _unique_name(graph, "stem_high_pass_weight")
    bias_name = _unique_name(graph, "stem_high_pass_bias")
    graph.initializer.extend(
        [
            numpy_helper.from_array(fused_weights.astype(np.float32), weights_name),
            numpy_helper.from_array(fused_bias.astype(np.float32), bias_name),
        ]
    )
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in high_pass.attribute}
    attributes["group"] = 1
    fused = helper.make_node("Conv", [image.name, weights_name, bias_name], [gain.output[0]], name=STEM_HIGH_PASS_FUSED, **attributes)
    remaining_nodes = [fused if node.name == STEM_GAIN else node for node in graph.node if node.name not in (STEM_HIGH_PASS, STEM_PROJECTION)]
    _replace_nodes(graph, remaining_nodes)
    _drop_unused_initializers(graph)
    image.type.tensor_type.shape.dim[1].dim_value = 1


def silu_to_relu(model) -> int:
    """Replace SiLU on the output of a Conv or Add node by Relu, and return the number replaced.

    The SiLU inside the SE blocks' small fully connected layers stays.
    """
    from onnx import helper

    graph = model.graph
    producers = _producers(graph)
    dropped = set()
    replacements = {}
    for node in graph.node:
        if node.op_type != "Mul":
            continue
        for value, gate in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            sigmoid = producers.get(gate)
            source = producers.get(value)
            if sigmoid is None or source is None or sigmoid.op_type != "Sigmoid" or sigmoid.input[0] != value:
                continue
            if source.op_type in ("Conv", "Add"):
                replacements[node.name] = helper.make_node("Relu", [value], [node.output[0]], name=f"{node.name}_relu")
                dropped.add(sigmoid.name)
            break
    _replace_nodes(graph, [replacements.get(node.name, node) for node in graph.node if node.name not in dropped])
    return len(replacements)


def conv_weights(model) -> dict[str, np.ndarray]:
    """Return every Conv node's weight and bias, keyed ``<node name>.weight`` and ``<node name>.bias``."""
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    weights = {}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        for suffix, name in zip((".weight", ".bias"), node.input[1:]):
            if name in initializers:
                weights[node.name + suffix] = numpy_helper.to_array(initializers[name])
    return weights


def set_conv_weights(model, weights: dict[str, np.ndarray]) -> None:
    """Replace the Conv weights and biases, named as by :func:`conv_weights`. Every Conv must be given."""
    from onnx import numpy_helper

    positions = {tensor.name: index for index, tensor in enumerate(model.graph.initializer)}
    expected = set(conv_weights(model))
    if set(weights) != expected:
        missing = sorted(expected - set(weights))
        extra = sorted(set(weights) - expected)
        raise ValueError(f"convolution weights do not match the graph: missing {missing[:3]}, unknown {extra[:3]}")
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        for suffix, name in zip((".weight", ".bias"), node.input[1:]):
            tensor = model.graph.initializer[positions[name]]
            value = np.asarray(weights[node.name + suffix], dtype=np.float32)
            if tuple(value.shape) != tuple(tensor.dims):
                raise ValueError(f"{node.name}{suffix} has shape {value.shape}, the graph expects {tuple(tensor.dims)}")
            tensor.CopyFrom(numpy_helper.from_array(value, name))


def _set_initializer(graph, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    for tensor in graph.initializer:
        if tensor.name == name:
            tensor.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise ValueError(f"the graph has no initializer {name}")


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input}
    used_initializers = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(used_initializers)


def _producers(graph) -> dict:
    return {output: node for node in graph.node for output in node.output}


def _consumers(graph) -> dict:
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _unique_name(graph, stem: str) -> str:
    used_names = {tensor.name for tensor in graph.initializer} | {output for node in graph.node for output in node.output}
    name, number = stem, 1
    while name in used_names:
        number += 1
        name = f"{stem}_{number}"
    return name


def _replace_nodes(graph, nodes: list) -> None:
    """Set the graph's nodes to ``nodes`` without those whose outputs nothing reads."""
    outputs = {output.name for output in graph.output}
    while True:
        used = {name for node in nodes for name in node.input} | outputs
        alive = [node for node in nodes if any(output in used for output in node.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    del graph.node[:]
    graph.node.extend(nodes)
