"""Built-in synthetic domains: registry, determinism, shapes, learnability, distinct families."""
from __future__ import annotations

import numpy as np
import pytest

from fennec_mlflow.data.synthetic import (
    FAMILIES,
    SYNTHETIC_TASKS,
    default_mix,
    render_synthetic,
    synthetic_mix,
    synthetic_task,
)
from fennec_mlflow.data.tasks import TaskError, sample_probe


def test_registry_has_at_least_four_families_of_three_tasks():
    assert len(FAMILIES) >= 4
    for family, names in FAMILIES.items():
        assert len(names) >= 3, family
        assert all(SYNTHETIC_TASKS[n].family == family for n in names)
    assert sorted(n for names in FAMILIES.values() for n in names) == sorted(SYNTHETIC_TASKS)


def test_tasks_inside_a_family_differ_in_classes_or_variant():
    for names in FAMILIES.values():
        signatures = {(SYNTHETIC_TASKS[n].classes, tuple(sorted(map(repr, SYNTHETIC_TASKS[n].options.items()))))
                      for n in names}
        assert len(signatures) == len(names)


@pytest.mark.parametrize("name", sorted(SYNTHETIC_TASKS))
def test_every_task_builds_balanced_at_default_size(name):
    spec = SYNTHETIC_TASKS[name]
    task = synthetic_task(name)
    images = task.images()
    n = spec.num_classes * spec.samples_per_class
    assert 300 <= n <= 2000
    assert images.shape == (n, 32, 32, 3) and images.dtype == np.uint8
    assert task.class_names == spec.classes and task.num_classes == len(spec.classes) >= 2
    assert np.bincount(task.labels, minlength=task.num_classes).tolist() == [spec.samples_per_class] * task.num_classes
    assert task.domain == spec.family and task.source == f"synthetic:{name}" and task.name == name
    # Not blank, not saturated: the renderer drew something.
    assert 10 < images.mean() < 245 and images.std() > 10


@pytest.mark.parametrize("name", sorted(SYNTHETIC_TASKS))
def test_every_task_builds_at_64_px(name):
    task = synthetic_task(name, samples_per_class=3, image_size=64)
    assert task.images().shape == (3 * task.num_classes, 64, 64, 3)
    assert task.images().dtype == np.uint8
    assert np.bincount(task.labels).tolist() == [3] * task.num_classes


def test_same_arguments_give_byte_identical_images_and_other_seeds_differ():
    for name in ("digits-noisy-bg", "shapes-textured-10", "gratings-texture-6", "glyphs-mixed-20", "blobs-count-5"):
        a = synthetic_task(name, samples_per_class=5, seed=3)
        b = synthetic_task(name, samples_per_class=5, seed=3)
        c = synthetic_task(name, samples_per_class=5, seed=4)
        assert np.array_equal(a.images(), b.images()) and np.array_equal(a.labels, b.labels)
        assert a.fingerprint == b.fingerprint
        assert not np.array_equal(a.images(), c.images()) and a.fingerprint != c.fingerprint


def test_a_larger_image_renders_the_same_scenes():
    """Scene parameters do not depend on the size: a 64 px render, box-downsampled, is the 32 px one."""
    for names in FAMILIES.values():
        small, labels_small = render_synthetic(names[0], samples_per_class=4, image_size=32)
        large, labels_large = render_synthetic(names[0], samples_per_class=4, image_size=64)
        assert np.array_equal(labels_small, labels_large)
        pooled = large.astype(float).reshape(-1, 32, 2, 32, 2, 3).mean(axis=(2, 4))
        assert np.corrcoef(pooled.ravel(), small.astype(float).ravel())[0, 1] > 0.9, names[0]


def test_renders_directly_at_224_px():
    images, _ = render_synthetic("shapes-4", samples_per_class=1, image_size=224)
    assert images.shape == (4, 224, 224, 3)
    # A 32 px image upscaled would have constant 7x7 blocks; a direct render has edges inside them.
    blocks = images.astype(int).reshape(4, 32, 7, 32, 7, 3)
    assert (blocks.max(axis=(2, 4)) - blocks.min(axis=(2, 4))).max() > 50


def test_unknown_name_lists_close_names_and_families():
    with pytest.raises(TaskError) as err:
        synthetic_task("shape-4")
    message = str(err.value)
    assert "shapes-4" in message
    for family in FAMILIES:
        assert family in message


@pytest.mark.parametrize("kwargs", [{"samples_per_class": 0}, {"image_size": 4}, {"samples_per_class": 2.5}])
def test_bad_sizes_are_refused(kwargs):
    with pytest.raises(TaskError):
        synthetic_task("shapes-4", **kwargs)


def test_mix_has_disjoint_prefixed_classes():
    names = ["digits-5class", "shapes-4", "gratings-freq-5"]
    mix = synthetic_mix(names, samples_per_class=4, image_size=32, seed=1)
    assert mix.domain == "mix" and mix.num_classes == 5 + 4 + 5
    assert mix.class_names[:5] == tuple(f"digits-5class/{d}" for d in "01234")
    assert mix.class_names[5] == "shapes-4/circle"
    assert np.bincount(mix.labels).tolist() == [4] * 14
    part = synthetic_task("shapes-4", samples_per_class=4, seed=1)
    assert np.array_equal(mix.images(np.flatnonzero((mix.labels >= 5) & (mix.labels < 9))), part.images())
    probe = sample_probe(mix, size=28, seed=0)
    assert probe.images().shape == (28, 32, 32, 3)


def test_default_mix_covers_every_family_and_duplicates_are_refused():
    mix = synthetic_mix(samples_per_class=2)
    assert {name.split("/")[0] for name in mix.class_names} == set(default_mix())
    assert {SYNTHETIC_TASKS[n].family for n in default_mix()} == set(FAMILIES)
    with pytest.raises(TaskError, match="twice"):
        synthetic_mix(["shapes-4", "shapes-4"], samples_per_class=2)


# ----------------------------------------------------------------------------- learnability


def _spectrum_features(images: np.ndarray) -> np.ndarray:
    """log |FFT| of the grey image: translation-invariant, so a linear model can use it."""
    gray = images.astype(np.float32).mean(-1) / 255.0
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    return np.log1p(np.abs(np.fft.rfft2(gray))).reshape(len(gray), -1)


@pytest.mark.parametrize("name", ["shapes-8", "gratings-freq-5", "blobs-size-4"])
def test_linear_model_on_spectra_learns_far_above_chance(name):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    task = synthetic_task(name)
    features = _spectrum_features(task.images())
    x_train, x_test, y_train, y_test = train_test_split(features, task.labels, test_size=0.3, random_state=0,
                                                        stratify=task.labels)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300)).fit(x_train, y_train)
    assert model.score(x_test, y_test) > 0.75  # chance is 0.125 to 0.25


def test_small_cnn_learns_digits_far_above_chance():
    import torch
    from torch import nn

    task = synthetic_task("digits-5class")
    images = torch.tensor(task.images()).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.tensor(task.labels)
    test = np.arange(task.num_samples) % 4 == 0
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(32 * 16, task.num_classes),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_idx = np.flatnonzero(~test)
    for epoch in range(12):
        model.train()
        order = np.random.default_rng(epoch).permutation(train_idx)
        for start in range(0, order.size, 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    assert accuracy > 0.6  # chance is 0.2


def test_families_are_told_apart_by_pixel_statistics():
    """Colour, contrast, edge density, spectrum and flat-background share separate the families
    well above chance (0.2) without learning any shape."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    features, family = [], []
    for index, names in enumerate(FAMILIES.values()):
        for name in names:
            images = synthetic_task(name, samples_per_class=6, seed=2).images()
            features.append(_pixel_statistics(images))
            family.extend([index] * len(images))
    x_train, x_test, y_train, y_test = train_test_split(np.concatenate(features), np.array(family), test_size=0.5,
                                                        random_state=0, stratify=family)
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(x_train, y_train)
    assert forest.score(x_test, y_test) > 0.8


def _pixel_statistics(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    gray = x.mean(-1)
    n, size = gray.shape[:2]
    power = np.abs(np.fft.fft2(gray - gray.mean(axis=(1, 2), keepdims=True))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij")
    band = np.digitize(np.hypot(fx, fy), [0.04, 0.08, 0.12, 0.18, 0.26, 0.36])
    spectrum = np.stack([power[:, band == b].sum(1) for b in range(7)], 1)
    spectrum /= spectrum.sum(1, keepdims=True) + 1e-9
    median = np.median(x.reshape(n, -1, 3), axis=1)
    flat_share = (np.abs(x - median[:, None, None, :]).max(-1) < 0.08).mean(axis=(1, 2))
    edges = np.abs(np.diff(gray, axis=1)).mean(axis=(1, 2)) + np.abs(np.diff(gray, axis=2)).mean(axis=(1, 2))
    saturation = (x.max(-1) - x.min(-1)).mean(axis=(1, 2))
    return np.column_stack([x.mean(axis=(1, 2)), x.std(axis=(1, 2)), spectrum, flat_share, edges, saturation])
