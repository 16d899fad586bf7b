"""Pretrained backbones (issue 24, item 4): the `model:` keys, names, weights files, imagenet
weights offline, `trainable`, and the model built on images or on pooled features."""

import shutil
import urllib.error

import keras
import numpy as np
import pytest

from kfold_clr.cli.main import main
from kfold_clr.config import validate_config
from kfold_clr.config.backbones import backbone_names, canonical_name, find_backbone
from kfold_clr.data.images.backbones import build_backbone, resolve_weights, weights_identity
from kfold_clr.errors import ConfigError
from kfold_clr.training.models import build_model

TINY = {"backbone": "mobilenet", "params": {"alpha": 0.25}}  # 218k weights: builds in a fraction of a second


def model_config(**model):
    experiment = {"name": "bb", "data": {"source": "synthetic", "name": "classification"},
                  "model": {"kind": "pretrained", **TINY, "weights": None, **model},
                  "strategies": {"constant": {"schedule": "constant", "lr": 0.01}}}
    return validate_config(experiment).model


def saved_weights(tmp_path, name="tiny.weights.h5", seed=1, **model):
    """A weights file of the tiny backbone written here, and the backbone it came from."""
    keras.utils.set_random_seed(seed)
    source = build_backbone(model_config(**model), (32, 32, 3))
    source.save_weights(tmp_path / name)
    return tmp_path / name, source


def test_snake_names_map_to_keras_constructors_in_any_spelling():
    names = backbone_names()
    for name in ("mobilenet_v2", "mobilenet_v3_small", "resnet50", "efficientnet_b0", "inception_v3", "vgg16",
                 "inception_resnet_v2", "convnext_tiny", "nasnet_mobile", "efficientnet_v2_s"):
        assert name in names
    assert find_backbone("mobilenet_v2") is keras.applications.MobileNetV2
    assert find_backbone("MobileNetV3Small") is keras.applications.MobileNetV3Small
    assert find_backbone("efficientnetv2b0") is keras.applications.EfficientNetV2B0
    assert canonical_name("ResNet50V2") == "resnet50_v2"
    assert len({name.replace("_", "") for name in names}) == len(names) == len(
        [a for a in dir(keras.applications) if a[0].isupper()])


def test_pretrained_defaults_are_filled_and_explicit_null_weights_kept():
    filled = validate_config({"name": "bb", "data": {"source": "synthetic", "name": "classification"},
                              "model": {"kind": "pretrained", "backbone": "mobilenet_v2"},
                              "strategies": {"c": {"schedule": "constant", "lr": 0.01}}}).model
    assert (filled.weights, filled.trainable, filled.pooling) == ("imagenet", False, "avg")
    assert model_config().weights is None
    assert model_config(trainable=4).trainable == 4 and model_config(trainable=True).trainable is True


@pytest.mark.parametrize("model, message", [
    ({"backbone": "mobilenet_v9"}, "model.backbone: 'mobilenet_v9' must be a keras.applications model, one of "),
    ({"backbone": None}, "model.backbone: None must be"),
    ({"trainable": 0}, "model.trainable"),
    ({"trainable": "3"}, "model.trainable"),
    ({"pooling": "flatten"}, "model.pooling: 'flatten'"),
    ({"weights": "weights.npz"}, "model.weights: 'weights.npz' must be imagenet, null"),
    ({"params": {"alpha": 0.25, "include_top": True}}, "model.params"),
])
def test_bad_pretrained_settings_are_one_line_errors(model, message):
    with pytest.raises(ConfigError) as caught:
        model_config(**model)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_pretrained_keys_are_refused_for_other_kinds():
    with pytest.raises(ConfigError, match="model.backbone: 'resnet50' must be omitted unless kind is 'pretrained'"):
        validate_config({"name": "bb", "data": {"source": "synthetic", "name": "classification"},
                         "model": {"kind": "mlp", "backbone": "resnet50"},
                         "strategies": {"c": {"schedule": "constant", "lr": 0.01}}})


def test_unknown_backbone_exits_2_listing_valid_names(tiny_experiment, write_yaml, capsys):
    tiny_experiment["model"] = {"kind": "pretrained", "backbone": "resnet_51"}
    assert main(["validate", str(write_yaml(tiny_experiment))]) == 2
    error = capsys.readouterr().err.strip()
    assert "model.backbone: 'resnet_51'" in error and "resnet50" in error and "mobilenet_v2" in error
    assert "Traceback" not in error


def test_a_weights_file_is_loaded_into_the_backbone(tmp_path):
    path, source = saved_weights(tmp_path)
    settings = resolve_weights(model_config(weights="tiny.weights.h5"), tmp_path)
    assert settings.weights == str(path.resolve())
    keras.utils.set_random_seed(2)  # another draw: only the file can make them equal
    loaded = build_backbone(settings, (32, 32, 3))
    fresh = build_backbone(model_config(), (32, 32, 3))
    assert len(loaded.weights) == len(source.weights) > 0
    for mine, theirs in zip(loaded.weights, source.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(fresh.weights, source.weights))
    # the whole model (backbone + head) carries the same backbone weights
    model = build_model(settings, input_shape=(32, 32, 3), n_outputs=3, task="classification")
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for mine, theirs in zip(inner.weights, source.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_weights_identity_is_the_file_content_imagenet_or_null(tmp_path):
    first, _ = saved_weights(tmp_path, "a.weights.h5", seed=1)
    same = shutil.copy(first, tmp_path / "b.weights.h5")
    other, _ = saved_weights(tmp_path, "c.weights.h5", seed=5)
    identity = {name: weights_identity(model_config(weights=str(path)))
                for name, path in {"a": first, "b": same, "c": other}.items()}
    assert identity["a"] == identity["b"] != identity["c"] and identity["a"].startswith("sha256:")
    assert weights_identity(model_config(weights="imagenet")) == f"imagenet (keras {keras.__version__})"
    assert weights_identity(model_config()) == "null"


def test_missing_or_unfitting_weights_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"model.weights: 'nowhere.weights.h5' is not a file") as caught:
        resolve_weights(model_config(weights="nowhere.weights.h5"), tmp_path)
    assert caught.value.exit_code == 2
    path, _ = saved_weights(tmp_path, params={"alpha": 0.5})  # another width: other shapes
    with pytest.raises(ConfigError, match="does not hold weights of backbone 'mobilenet'"):
        build_backbone(resolve_weights(model_config(weights=path.name), tmp_path), (32, 32, 3))


@pytest.mark.parametrize("trainable", [1, 5, 30])
def test_trainable_n_makes_exactly_the_last_n_layers_trainable(trainable):
    backbone = build_backbone(model_config(trainable=trainable), (32, 32, 3))
    flags = [layer.trainable for layer in backbone.layers]
    assert flags == [False] * (len(flags) - trainable) + [True] * trainable
    trained = {id(v) for layer in backbone.layers[-trainable:] for v in layer.trainable_weights}
    assert {id(v) for v in backbone.trainable_weights} == trained


def test_trainable_true_false_and_too_many_layers():
    assert not build_backbone(model_config(trainable=False), (32, 32, 3)).trainable_weights
    unfrozen = build_backbone(model_config(trainable=True), (32, 32, 3))
    assert all(layer.trainable for layer in unfrozen.layers)
    with pytest.raises(ConfigError, match=rf"model.trainable: 500 must be at most the {len(unfrozen.layers)} "
                                          "layers of backbone 'mobilenet'"):
        build_backbone(model_config(trainable=500), (32, 32, 3))


def test_images_too_small_for_the_backbone_are_a_config_error():
    with pytest.raises(ConfigError, match=r"data.image_size: \[16, 16\] is too small for backbone 'mobilenet' "
                                          r"\(at least 32 x 32\)"):
        build_backbone(model_config(), (16, 16, 3))


def test_imagenet_weights_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(keras_config, "keras_home", lambda: str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    with pytest.raises(ConfigError) as caught:
        build_backbone(model_config(weights="imagenet"), (128, 128, 3))
    message = str(caught.value)
    assert message.startswith("model.weights: 'imagenet' weights of backbone 'mobilenet' are not in Keras's cache")
    assert "mobilenet_2_5_128_tf_no_top.h5" in message and str(tmp_path / "keras" / "models") in message
    assert "model.weights to the path of a .weights.h5 file" in message and "\n" not in message
    assert caught.value.exit_code == 2


def test_the_model_is_backbone_and_head_on_images_and_the_head_alone_on_features():
    settings = model_config(hidden=[16], dropout=0.25)
    full = build_model(settings, input_shape=(32, 32, 3), n_outputs=4, task="classification")
    assert [type(layer).__name__ for layer in full.layers[1:3]] == ["BackbonePreprocess", "Functional"]
    head = build_model(settings, input_shape=(256,), n_outputs=4, task="classification")
    assert [type(layer).__name__ for layer in head.layers] == ["InputLayer", "Dense", "Activation", "Dropout", "Dense"]
    assert head.output.shape[-1] == full.output.shape[-1] == 4
    # the preprocessing is the backbone module's own on 0..255 (mobilenet: to -1..1) of the
    # [0, 1] pixels the image stream gives under data.scale: none
    pixels = np.stack([np.zeros((32, 32, 3)), np.full((32, 32, 3), 0.5), np.ones((32, 32, 3))]).astype("float32")
    expected = keras.applications.mobilenet.preprocess_input(pixels * 255.0)
    np.testing.assert_allclose(full.layers[1](pixels).numpy(), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(expected[[0, 2], 0, 0, 0], [-1.0, 1.0])
