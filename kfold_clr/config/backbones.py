"""The backbone names `model.backbone` may take: every keras.applications constructor, in lower
snake case (``mobilenet_v3_small`` for ``MobileNetV3Small``; underscores and case do not matter).

The config checks names here; `kfold_clr.data.images.backbones` builds the models.
"""

import functools
import re
from collections.abc import Callable
from typing import Any, Optional

import keras

#: Constructor arguments kfold_clr sets itself (not allowed in `model.params`).
CONSTRUCTOR_KEYS = ("include_top", "weights", "input_tensor", "input_shape", "pooling", "classes",
                    "classifier_activation")


def _snake(constructor_name: str) -> str:
    """MobileNetV3Small -> mobilenet_v3_small, EfficientNetB0 -> efficientnet_b0, ResNet50V2 -> resnet50_v2."""
    text = constructor_name.lower().replace("inceptionresnet", "inception_resnet")
    text = re.sub(r"(?<=[a-z0-9])(v\d)", r"_\1", text)
    text = re.sub(r"(?<=net)(b\d)$", r"_\1", text)
    text = re.sub(r"(?<=_v\d)([a-z]+\d?)$", r"_\1", text)
    return re.sub(r"(?<=[a-z])(xlarge|tiny|small|base|large|mobile)$", r"_\1", text)


def _normal(name: object) -> str:
    return str(name).lower().replace("_", "").replace("-", "")


@functools.cache
def _registry() -> dict[str, Callable[..., Any]]:
    """{snake name: constructor} of every model keras.applications offers (listed once per process)."""
    return {_snake(attribute): getattr(keras.applications, attribute) for attribute in dir(keras.applications)
            if attribute[:1].isupper() and callable(getattr(keras.applications, attribute))}


def backbone_names() -> list[str]:
    """The backbone names `model.backbone` accepts, sorted."""
    return sorted(_registry())


def find_backbone(name: object) -> Optional[Callable[..., Any]]:
    """The keras.applications constructor called `name` (any case, underscores optional), or None."""
    if not isinstance(name, str):
        return None
    return {_normal(snake): constructor for snake, constructor in _registry().items()}.get(_normal(name))


def canonical_name(name: str) -> str:
    """The listed (snake case) spelling of a backbone name."""
    return next(snake for snake in _registry() if _normal(snake) == _normal(name))
