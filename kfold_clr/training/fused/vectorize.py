"""How TensorFlow vectorises a model over branches: stacked convolution kernels as one grouped
convolution (GPUs) or one convolution per branch (CPUs), and a record of the ops it can only
loop over.

`tf.vectorized_map` turns most ops of a branch into one batched op (a Dense kernel stacked
along the branch axis becomes a batched matmul), but a `Conv2D` whose kernel differs per
branch has no converter in TensorFlow and runs as a while loop over branches. Here it becomes
either one grouped convolution (the branches' channels side by side, one group per branch: one
fast kernel on a GPU, and on a CPU for small images, where one op beats many) or, on CPUs for
larger images, where TensorFlow's grouped convolution and its gradient cost as much as or more
than the branches' own convolutions, one plain convolution per branch in the same graph (the op
each fold's own model runs; TensorFlow may run them side by side). 1-D
convolutions are 2-D ones in TensorFlow, so they are covered too; gradients are TensorFlow's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_ORIGINAL = {}
CONV_MODE = None  # "grouped", "split", or None: grouped with a GPU or small inputs, split otherwise
SPLIT_ABOVE = 32 * 32  # CPU: inputs of more pixels (height x width) than this run split


def conv_mode() -> str:
    """How stacked convolutions run: `CONV_MODE`, or "grouped" with a GPU and "split" without (which
    still runs inputs of at most `SPLIT_ABOVE` pixels grouped)."""
    if CONV_MODE is not None:
        return CONV_MODE
    import tensorflow as tf

    return "grouped" if tf.config.list_physical_devices("GPU") else "split"


def _split_conv2d(pfor_input: Any) -> Any:
    """pfor converter of Conv2D: stacked kernels as one plain convolution per branch, stacked."""
    import tensorflow as tf
    from tensorflow.python.ops.parallel_for import pfor

    kernel_stacked = pfor_input.input(1)[1]
    if not kernel_stacked or pfor_input.get_attr("data_format") not in (b"NHWC", "NHWC"):
        return _ORIGINAL["Conv2D"](pfor_input)
    pfor_input.stack_inputs([0, 1])
    x, kernel = pfor_input.stacked_input(0), pfor_input.stacked_input(1)
    branches, height, width = x.shape[0], x.shape[2], x.shape[3]
    if branches is None or height is None or width is None or (CONV_MODE is None and height * width <= SPLIT_ABOVE):
        return _grouped_conv2d(pfor_input)  # small inputs (or unknown sizes): one op for all branches
    outputs = [pfor._create_op("Conv2D", [x[b], kernel[b]], [x.dtype], attrs=pfor_input.op.node_def.attr).outputs[0]
               for b in range(branches)]
    return pfor.wrap(tf.stack(outputs), True)


def _grouped_conv2d(pfor_input: Any) -> Any:
    """pfor converter of Conv2D: kernels stacked per branch become one grouped convolution."""
    import tensorflow as tf
    from tensorflow.python.ops.parallel_for import pfor

    kernel_stacked = pfor_input.input(1)[1]
    if not kernel_stacked or pfor_input.get_attr("data_format") not in (b"NHWC", "NHWC"):
        return _ORIGINAL["Conv2D"](pfor_input)
    pfor_input.stack_inputs([0, 1])
    x = pfor_input.stacked_input(0)  # (branches, rows, height, width, channels)
    kernel = pfor_input.stacked_input(1)  # (branches, kh, kw, channels, filters)
    x_shape, k_shape = tf.shape(x), tf.shape(kernel)
    branches = x_shape[0]
    grouped_x = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]),
                           tf.concat([x_shape[1:4], [branches * x_shape[4]]], axis=0))
    grouped_kernel = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]),
                                tf.concat([k_shape[1:4], [branches * k_shape[4]]], axis=0))
    y = pfor._create_op("Conv2D", [grouped_x, grouped_kernel], [x.dtype],
                        attrs=pfor_input.op.node_def.attr).outputs[0]
    y_shape = tf.shape(y)
    y = tf.reshape(y, tf.concat([y_shape[:3], [branches, k_shape[4]]], axis=0))
    return pfor.wrap(tf.transpose(y, [3, 0, 1, 2, 4]), True)


@contextlib.contextmanager
def grouped_convolutions() -> Iterator[None]:
    """While tracing a stacked model: Conv2D with stacked kernels as one grouped convolution or
    one convolution per branch (`conv_mode`).

    TensorFlow's converter table is process-wide; the grouped converter is in it only
    while a stacked model traces, so no other `tf.vectorized_map` of the process sees it.
    """
    from tensorflow.python.ops.parallel_for import pfor

    registry = pfor._pfor_converter_registry
    original = registry["Conv2D"]
    _ORIGINAL["Conv2D"] = original if original not in (_grouped_conv2d, _split_conv2d) else _ORIGINAL["Conv2D"]
    registry["Conv2D"] = _grouped_conv2d if conv_mode() == "grouped" else _split_conv2d
    try:
        yield
    finally:
        registry["Conv2D"] = original


@contextlib.contextmanager
def looped_ops(found: list[str]) -> Iterator[list[str]]:
    """Collect, into the list `found`, the op types `tf.vectorized_map` loops over while tracing."""
    from tensorflow.python.ops.parallel_for import pfor

    original = pfor._fallback_converter

    def recording(pfor_input: Any, *args: Any, **kwargs: Any) -> Any:
        found.append(pfor_input.op_type)
        return original(pfor_input, *args, **kwargs)

    pfor._fallback_converter = recording
    try:
        yield found
    finally:
        pfor._fallback_converter = original
