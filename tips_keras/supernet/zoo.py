"""Ready anytime supernets: gated residual blocks in stages, an exit head after every stage.

Layout shared by the builders::

    input -> stem -> [stage 0: gated blocks] -> exit 0
                  -> transition 1 -> [stage 1: gated blocks] -> exit 1
                  -> ...                                      -> exit S-1

Every residual block's branch is a `PathGate` (off = only the identity shortcut carries the
signal). Transitions (downsampling) are fixed but skipped when an earlier exit is taken, as is
everything else after the active exit.
"""

import keras
from keras import layers

from tips_keras.supernet import layers as gl
from tips_keras.supernet.model import AnytimeModel


def _check_stages(widths, blocks_per_stage):
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(
            "Invalid value for argument `widths`. Expected a non-empty sequence of positive "
            f"integers (channels per stage). Received: widths={widths!r}"
        )
    if isinstance(blocks_per_stage, bool) or not isinstance(blocks_per_stage, int) or blocks_per_stage < 1:
        raise ValueError(
            "Invalid value for argument `blocks_per_stage`. Expected a positive integer. "
            f"Received: blocks_per_stage={blocks_per_stage!r}"
        )


def _check_stem_stride(stem_stride):
    if isinstance(stem_stride, bool) or stem_stride not in (1, 2):
        raise ValueError(
            "Invalid value for argument `stem_stride`. Expected 1 or 2. "
            f"Received: stem_stride={stem_stride!r}"
        )


def _sequential(input_shape, ops, name):
    return keras.Sequential([keras.Input(input_shape)] + ops, name=name)


EXIT_HEADS = ("conv", "pool")


def _head(shape, num_classes, name, bn_momentum, conv_channels=None):
    ops = [layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn"),
           layers.ReLU(name=f"{name}_relu")]
    if conv_channels:
        # An early exit's own small convolution stage (MSDNet, Shallow-Deep Networks): the trunk
        # need not make its features linearly separable after pooling.
        ops += [layers.Conv2D(conv_channels, 3, strides=2, padding="same", use_bias=False,
                              name=f"{name}_conv"),
                layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_conv_bn"),
                layers.ReLU(name=f"{name}_conv_relu")]
    ops += [layers.GlobalAveragePooling2D(name=f"{name}_pool"),
            layers.Dense(num_classes, activation="softmax", name=f"{name}_dense")]
    return _sequential(shape, ops, name=f"{name}_layers")


def _build(input_shape, num_classes, widths, blocks_per_stage, stem, branch, transition, name, bn_momentum,
           exit_head):
    _check_stages(widths, blocks_per_stage)
    if exit_head not in EXIT_HEADS:
        raise ValueError(
            f"Invalid value for argument `exit_head`. Expected one of {EXIT_HEADS}. "
            f"Received: exit_head={exit_head!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            "Invalid value for argument `num_classes`. Expected an integer >= 2. "
            f"Received: num_classes={num_classes!r}"
        )
    inputs = keras.Input(tuple(input_shape), name="image")
    control = gl.SubnetController(len(widths) * blocks_per_stage, len(widths))(inputs)
    x = stem(inputs, widths[0])
    heads, gate = [], 0
    for s, width in enumerate(widths):
        if s > 0:
            t = transition(tuple(x.shape[1:]), width, f"stage{s}_transition")
            x = gl.PathGate(t, gate_index=None, min_exit=s, name=f"stage{s}_transition")([x, control])
        for b in range(blocks_per_stage):
            block = f"stage{s}_block{b}"
            br = branch(tuple(x.shape[1:]), width, f"{block}_branch")
            out = gl.PathGate(br, gate_index=gate, min_exit=s, name=block)([x, control])
            x = layers.Add(name=f"{block}_add")([x, out])
            gate += 1
        early = exit_head == "conv" and s < len(widths) - 1
        head = _head(tuple(x.shape[1:]), num_classes, f"exit{s}", bn_momentum,
                     conv_channels=2 * width if early else None)
        heads.append(gl.ExitHead(head, exit_index=s, name=f"exit{s}")([x, control]))
    outputs = gl.ExitSelector(name="anytime_output")(heads + [control])
    return AnytimeModel(inputs, outputs, name=name)


def anytime_resnet(
    input_shape=(28, 28, 1),
    num_classes=10,
    widths=(16, 32, 64),
    blocks_per_stage=2,
    bn_momentum=0.9,
    exit_head="conv",
    stem_stride=1,
    name="anytime_resnet",
):
    """A pre-activation ResNet supernet with one gate per residual block and one exit per stage.

    Args:
        input_shape: image shape (H, W, C).
        num_classes: number of classes of the softmax heads.
        widths: channels of each stage; stage s > 0 halves the resolution.
        blocks_per_stage: gated residual blocks per stage.
        bn_momentum: BatchNormalization momentum. 0.9 rather than Keras' 0.99: moving statistics
            must settle within a short training run, and each sub-network sees only part of it.
        exit_head: ``"conv"`` (default): every exit before the last gets its own 3x3 stride-2
            convolution (twice the stage's channels) + BatchNorm + ReLU before global pooling and
            the softmax layer, as early exits in MSDNet and Shallow-Deep Networks do; the last
            exit pools directly. ``"pool"``: every exit pools directly (the heads of tips-keras
            0.1). A head's FLOPs count in every configuration that takes its exit.
        stem_stride: stride of the stem convolution, 1 (default) or 2. 2 halves the resolution
            of every stage (a quarter of the MACs per channel, as the stride-2 stems of ResNet
            and MobileNet): with twice the widths a stage costs what it did at stride 1.
        name: model name.

    Returns:
        An `AnytimeModel` whose output is the active exit's class probabilities.

    Raises:
        ValueError: non-positive widths / blocks, fewer than 2 classes, an unknown ``exit_head``,
            a ``stem_stride`` other than 1 or 2.

    Example:
        >>> model = anytime_resnet((28, 28, 1), 10, widths=(8, 16), blocks_per_stage=2)
        >>> model.config_space.num_gates, model.config_space.num_exits
        (4, 2)
    """

    def stem(x, width):
        x = layers.Conv2D(width, 3, strides=stem_stride, padding="same", use_bias=False, name="stem_conv")(x)
        return layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)

    def branch(shape, width, n):
        return _sequential(
            shape,
            [
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_bn1"),
                layers.ReLU(name=f"{n}_relu1"),
                layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{n}_conv1"),
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_bn2"),
                layers.ReLU(name=f"{n}_relu2"),
                layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{n}_conv2"),
            ],
            n,
        )

    def transition(shape, width, n):
        return _sequential(
            shape,
            [
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_bn"),
                layers.ReLU(name=f"{n}_relu"),
                layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name=f"{n}_conv"),
            ],
            f"{n}_layers",
        )

    _check_stem_stride(stem_stride)
    return _build(
        input_shape, num_classes, widths, blocks_per_stage, stem, branch, transition, name, bn_momentum,
        exit_head,
    )


def anytime_mobilenet(
    input_shape=(32, 32, 3),
    num_classes=10,
    widths=(16, 24, 32),
    blocks_per_stage=2,
    expansion=4,
    bn_momentum=0.9,
    exit_head="conv",
    stem_stride=1,
    name="anytime_mobilenet",
):
    """A MobileNetV2-style supernet: gated inverted-residual blocks, an exit per stage.

    Args:
        input_shape: image shape (H, W, C).
        num_classes: number of classes.
        widths: channels of each stage; stage s > 0 halves the resolution.
        blocks_per_stage: gated inverted-residual blocks per stage.
        expansion: expansion factor of the 1x1 expand convolution.
        bn_momentum: BatchNormalization momentum (see `anytime_resnet`).
        exit_head: ``"conv"`` or ``"pool"`` (see `anytime_resnet`).
        stem_stride: 1 (default) or 2 (see `anytime_resnet`).
        name: model name.

    Returns:
        An `AnytimeModel`.

    Example:
        >>> model = anytime_mobilenet((32, 32, 3), 10)
        >>> model.config_space.num_gates
        6
    """

    def stem(x, width):
        x = layers.Conv2D(width, 3, strides=stem_stride, padding="same", use_bias=False, name="stem_conv")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
        return layers.ReLU(6.0, name="stem_relu")(x)

    def branch(shape, width, n):
        return _sequential(
            shape,
            [
                layers.Conv2D(width * expansion, 1, use_bias=False, name=f"{n}_expand"),
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_expand_bn"),
                layers.ReLU(6.0, name=f"{n}_expand_relu"),
                layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{n}_dw"),
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_dw_bn"),
                layers.ReLU(6.0, name=f"{n}_dw_relu"),
                layers.Conv2D(width, 1, use_bias=False, name=f"{n}_project"),
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_project_bn"),
            ],
            n,
        )

    def transition(shape, width, n):
        return _sequential(
            shape,
            [
                layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name=f"{n}_dw"),
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_dw_bn"),
                layers.ReLU(6.0, name=f"{n}_relu"),
                layers.Conv2D(width, 1, use_bias=False, name=f"{n}_project"),
                layers.BatchNormalization(momentum=bn_momentum, name=f"{n}_project_bn"),
            ],
            f"{n}_layers",
        )

    _check_stem_stride(stem_stride)
    return _build(
        input_shape, num_classes, widths, blocks_per_stage, stem, branch, transition, name, bn_momentum,
        exit_head,
    )
