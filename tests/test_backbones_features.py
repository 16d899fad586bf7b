"""A frozen backbone runs once per image (issue 24, item 4): `prepare_pretrained` caches its
pooled features and the heads train on them; otherwise the pixels stay for the whole model."""

import os

import keras
import numpy as np
import pytest

from kfold_clr.config import validate_config
from kfold_clr.data.datasets import Dataset
from kfold_clr.data.images import backbones, features
from kfold_clr.data.images.backbones import build_backbone, prepare_pretrained

N_IMAGES, SIDE = 12, 32


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "cache"))


def experiment_config(tmp_path, *, data=None, **model):
    experiment = {"name": "bb", "seed": 4,
                  "data": {"source": "images", "path": "imgs", "image_size": [SIDE, SIDE], **(data or {})},
                  "model": {"kind": "pretrained", "backbone": "mobilenet", "params": {"alpha": 0.25},
                            "weights": "tiny.weights.h5", "hidden": [8], **model},
                  "strategies": {"constant": {"schedule": "constant", "lr": 0.01}}}
    return validate_config(experiment).located(tmp_path)


def pixel_dataset(seed=0, n=N_IMAGES):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, SIDE, SIDE, 3), dtype=np.uint8)
    return Dataset(x=x, y=np.arange(n, dtype=np.int32) % 2, groups=None, task="classification", n_outputs=2,
                   class_names=["a", "b"], description="pixels")


def write_weights(tmp_path, seed=1):
    keras.utils.set_random_seed(seed)
    source = build_backbone(experiment_config(tmp_path, weights=None).model, (SIDE, SIDE, 3))
    source.save_weights(tmp_path / "tiny.weights.h5")
    return source


def feature_files(tmp_path):
    return sorted((tmp_path / "cache" / "images" / "features").glob("*.npy"))


def test_frozen_backbone_features_equal_the_backbone_on_preprocessed_pixels(tmp_path):
    source = write_weights(tmp_path)
    dataset = pixel_dataset()
    config, prepared = prepare_pretrained(experiment_config(tmp_path), dataset, verbose=False)
    preprocess = keras.applications.mobilenet.preprocess_input
    expected = source.predict(preprocess(dataset.x.astype("float32")), verbose=0)
    assert isinstance(prepared.x, np.memmap) and prepared.x.dtype == np.float32
    assert prepared.x.shape == (N_IMAGES, source.output.shape[-1])
    np.testing.assert_allclose(prepared.x, expected, rtol=1e-5, atol=1e-5)
    assert [path.name for path in feature_files(tmp_path)] == [os.path.basename(prepared.x.filename)]
    # the head trains on features as a table; the pixels' scaling is the backbone's own
    assert config.data.image_shape is None and config.data.scale == "none"
    assert config.model.weights == str((tmp_path / "tiny.weights.h5").resolve())
    np.testing.assert_array_equal(prepared.y, dataset.y)
    assert prepared.content_hash() != dataset.content_hash()


def test_a_second_call_reads_the_cache_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    write_weights(tmp_path)
    config, dataset = experiment_config(tmp_path), pixel_dataset()
    _, first = prepare_pretrained(config, dataset, verbose=False)
    (path,) = feature_files(tmp_path)
    written = path.stat().st_mtime_ns
    calls = []
    real_compute = features._compute
    monkeypatch.setattr(features, "_compute", lambda *a, **k: calls.append(1) or real_compute(*a, **k))
    _, second = prepare_pretrained(config, dataset, verbose=False)
    assert calls == [] and path.stat().st_mtime_ns == written
    np.testing.assert_array_equal(second.x, first.x)
    assert second.content_hash() == first.content_hash()
    values = np.array(first.x)
    del first, second  # their pages map the file that is damaged next
    path.write_bytes(path.read_bytes()[:200])  # a truncated file
    _, third = prepare_pretrained(config, dataset, verbose=False)
    assert calls == [1] and feature_files(tmp_path) == [path]
    np.testing.assert_array_equal(third.x, values)
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]  # no temporary left behind


def test_the_cache_key_follows_the_weights_the_pooling_and_the_pixels(tmp_path):
    write_weights(tmp_path, seed=1)
    config, dataset = experiment_config(tmp_path), pixel_dataset()
    hashes = {"base": prepare_pretrained(config, dataset, verbose=False)[1].content_hash()}
    hashes["max"] = prepare_pretrained(experiment_config(tmp_path, pooling="max"), dataset,
                                       verbose=False)[1].content_hash()
    hashes["pixels"] = prepare_pretrained(config, pixel_dataset(seed=9), verbose=False)[1].content_hash()
    write_weights(tmp_path, seed=2)  # the same file name, other weights
    changed = prepare_pretrained(config, dataset, verbose=False)[1]
    hashes["weights"] = changed.content_hash()
    assert len(set(hashes.values())) == 4 and len(feature_files(tmp_path)) == 4


def test_flattened_pixels_with_an_image_shape_give_the_same_features(tmp_path):
    write_weights(tmp_path)
    dataset = pixel_dataset()
    flat = Dataset(x=dataset.x.reshape(N_IMAGES, -1), y=dataset.y, groups=None, task="classification",
                   n_outputs=2)
    config = experiment_config(tmp_path)
    assert config.data.image_shape == [SIDE, SIDE, 3]
    np.testing.assert_allclose(prepare_pretrained(config, flat, verbose=False)[1].x,
                               prepare_pretrained(config, dataset, verbose=False)[1].x, rtol=1e-6)


@pytest.mark.parametrize("change", [{"trainable": True}, {"trainable": 3},
                                    {"data": {"augment": {"flip": "horizontal"}}}])
def test_trainable_backbones_or_augmentation_keep_the_pixels(tmp_path, change, monkeypatch):
    write_weights(tmp_path)
    config = experiment_config(tmp_path, **{k: v for k, v in change.items() if k != "data"})
    if "data" in change:  # `data.augment` is another item's key: stand in for it where it is not there yet
        if "augment" not in type(config.data).model_fields:
            monkeypatch.setattr(backbones, "features_once", lambda cfg: False)
        else:
            config = experiment_config(tmp_path, data=change["data"])
    dataset = pixel_dataset()
    resolved, kept = prepare_pretrained(config, dataset, verbose=False)
    assert kept.x is dataset.x and not feature_files(tmp_path)
    assert resolved.data.image_shape == [SIDE, SIDE, 3] and resolved.data.scale == "none"
    assert kept.content_hash() != dataset.content_hash()  # the weights are part of the fingerprint


def test_the_features_cache_is_never_inside_the_image_folder(tmp_path, monkeypatch):
    write_weights(tmp_path)
    monkeypatch.setenv("KFOLD_CLR_CACHE", str(tmp_path / "imgs" / "cache"))
    with pytest.raises(Exception, match="KFOLD_CLR_CACHE: .* is inside the image folder") as caught:
        prepare_pretrained(experiment_config(tmp_path), pixel_dataset(), verbose=False)
    assert getattr(caught.value, "exit_code", None) == 2
    assert not (tmp_path / "imgs").exists()


def test_heads_train_on_cached_features_through_cross_validate(tmp_path):
    """The head-only model trains fused on the features, like any table."""
    import kfold_clr
    from kfold_clr.training.models import build_model

    write_weights(tmp_path)
    config, prepared = prepare_pretrained(experiment_config(tmp_path, hidden=[8]), pixel_dataset(n=24),
                                          verbose=False)

    def head(input_shape, n_outputs):
        return build_model(config.model, input_shape=input_shape, n_outputs=n_outputs, task="classification")

    results = kfold_clr.cross_validate(
        head, prepared.x, prepared.y, cv=3, epochs=2, batch_size=8, scale="none", verbose=0,
        output_dir=tmp_path / "results", strategies={"constant": {"schedule": "constant", "lr": 0.01},
                                                     "step": {"schedule": "step", "lr": 0.02, "factor": 0.5,
                                                              "every_epochs": 1}})
    folds = results.folds
    assert len(folds) == 6 and folds["fused"].astype(str).str.lower().eq("true").all()
    assert folds["val_accuracy"].between(0, 1).all()
