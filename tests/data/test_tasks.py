import numpy as np
import pytest
from PIL import Image

from fennec_mlflow.data.task_specs import load_task
from fennec_mlflow.data.tasks import (Task, TaskError, from_arrays, from_folder, sample_probe, split_indices,
                                      stratified_sample)
from tests.helpers import blob_images


def make_folder(root, classes=("cat", "dog", "eel"), per_class=4, size=20):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size + 3, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_folder_task_reads_classes_and_resizes(tmp_path):
    task = from_folder(make_folder(tmp_path / "data"), image_size=40)
    assert task.class_names == ("cat", "dog", "eel")
    assert task.num_samples == 12 and task.num_classes == 3
    assert np.bincount(task.labels).tolist() == [4, 4, 4]
    images = task.images([0, 5])
    assert images.shape == (2, 40, 40, 3) and images.dtype == np.uint8
    assert task.facts() == {"class_count": 3, "sample_count": 12, "domain": "unknown", "source": task.source}


def test_corrupt_image_is_skipped_with_warning_and_counted(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.warns(UserWarning, match="skipped 1 unreadable image"):
        task = from_folder(root)
    assert task.skipped_files == 1 and task.num_samples == 12


def test_a_truncated_jpeg_is_skipped_at_load_and_damage_found_later_is_a_clear_error(tmp_path):
    """PIL's verify passes a JPEG cut off in a copy; it would fail in the middle of a job."""
    root = make_folder(tmp_path / "data")
    noise = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "cat" / "whole.jpg")
    data = (root / "cat" / "whole.jpg").read_bytes()
    (root / "cat" / "cut.jpg").write_bytes(data[: len(data) * 3 // 4])
    (root / "dog" / "trailer.jpg").write_bytes(data + bytes(4096))  # a camera's data after the end marker: fine
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image.*cut.jpg \(truncated JPEG\)"):
        task = from_folder(root)
    assert task.num_samples == 14
    Image.new("L", (13_000, 14_000)).save(root / "eel" / "slide.png")  # beyond PIL's guard: skipped, said why
    with pytest.warns(UserWarning, match=r"eel/slide.png \(over [0-9,]+ pixels: downscale it\)"):
        assert from_folder(root).num_samples == 14
    (root / "dog" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # damaged after the task was loaded
    with pytest.raises(TaskError, match=r"image '.*0.png' cannot be decoded .* re-save or remove it"):
        task.images(np.arange(task.num_samples))


def test_sixteen_bit_images_keep_their_contrast(tmp_path):
    """A 16-bit PNG (medical, scientific) is scaled to 8 bits, not clipped at 255 by PIL's conversion."""
    root = tmp_path / "scans"
    for name, level in (("dark", 10_000), ("bright", 50_000)):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((16, 16), level, np.uint16)).save(root / name / "0.png")
    task = from_folder(root, image_size=16)
    assert Image.open(root / "dark" / "0.png").mode.startswith("I")
    means = {name: task.images(np.flatnonzero(task.labels == label)).mean()
             for label, name in enumerate(task.class_names)}
    assert means == {"bright": pytest.approx(50_000 / 257, abs=1), "dark": pytest.approx(10_000 / 257, abs=1)}


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="no class sub-folders"):
        from_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    with pytest.raises(TaskError, match="no readable images"):
        from_folder(tmp_path / "noimg")
    with pytest.raises(TaskError, match="does not exist"):
        from_folder(tmp_path / "missing")
    root = make_folder(tmp_path / "one_empty", classes=("cat", "dog"))
    (root / "eel").mkdir()
    with pytest.raises(TaskError, match="class folder\\(s\\) 'eel' of .* hold no readable images"):
        from_folder(root)


def test_single_class_task_is_rejected():
    images, _ = blob_images(5, 2)
    with pytest.raises(TaskError, match="single class"):
        from_arrays(images, np.zeros(len(images), dtype=int), name="one")


def test_fewer_samples_than_classes_is_rejected():
    images, _ = blob_images(1, 2)
    task = from_arrays(images, np.array([0, 1]), name="tiny", class_names=["a", "b", "c", "d"])
    with pytest.raises(TaskError, match="2 samples for 4 classes"):
        sample_probe(task, 10)
    with pytest.raises(TaskError, match="cannot cover"):
        stratified_sample(np.repeat(np.arange(5), 10), 3)


def test_probe_is_stratified_and_seeded():
    labels = np.concatenate([np.zeros(700), np.ones(200), np.full(100, 2)]).astype(int)
    probe = stratified_sample(labels, 100, seed=3)
    assert len(probe) == 100 and len(set(probe)) == 100
    assert np.bincount(labels[probe]).tolist() == [70, 20, 10]
    assert np.array_equal(probe, stratified_sample(labels, 100, seed=3))
    assert not np.array_equal(probe, stratified_sample(labels, 100, seed=4))
    # rare classes still appear
    rare = np.concatenate([np.zeros(998), [1, 2]]).astype(int)
    assert set(rare[stratified_sample(rare, 10, seed=0)]) == {0, 1, 2}
    assert len(stratified_sample(labels, 5000)) == 1000


def test_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), 50)
    train, val, test = split_indices(labels, seed=1)
    assert len(train) == 120 and len(val) == 40 and len(test) == 40
    assert not set(train) & set(val) and not set(val) & set(test)
    assert np.bincount(labels[test]).tolist() == [10, 10, 10, 10]


def test_array_task_validation_and_fingerprint():
    images, labels = blob_images(3, 2)
    task = from_arrays(images, labels, name="a")
    assert isinstance(task, Task) and task.fingerprint == from_arrays(images, labels, name="a").fingerprint
    assert task.fingerprint != from_arrays(images[::-1], labels, name="a").fingerprint
    with pytest.raises(TaskError, match="6 images but 5 labels"):
        from_arrays(images, labels[:5], name="a")
    with pytest.raises(TaskError, match="NaN"):
        from_arrays(np.full((4, 8, 8, 3), np.nan), np.array([0, 1, 0, 1]), name="nan")
    gray = from_arrays(images[..., 0], labels, name="gray")
    assert gray.images([0]).shape == (1, 32, 32, 3)


def test_load_task_reads_a_folder_spec(tmp_path):
    root = make_folder(tmp_path / "pets")
    assert load_task(f"folder:{root}").name == "pets"
    with pytest.raises(TaskError, match="unknown torchvision dataset 'CIFAR11'.*CIFAR10"):
        load_task("torchvision:CIFAR11")


def test_flat_folder_is_an_unlabelled_ranking_target(tmp_path):
    root = make_folder(tmp_path / "data", classes=("x",))
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in (root / "x").iterdir():
        path.rename(flat / path.name)
    with pytest.raises(TaskError, match="flat folder of images works as a ranking target"):
        from_folder(flat)
    task = load_task(f"folder:{flat}", unlabelled_ok=True)
    assert not task.labelled and task.num_samples == 4 and task.images([0]).shape == (1, 32, 32, 3)


def test_a_single_class_folder_is_an_unlabelled_ranking_target_but_no_training_task(tmp_path):
    """my_images/all/*.jpg: ranking never reads labels, fine-tuning and FDA need two classes."""
    from fennec_mlflow.data.tasks import single_class_note

    root = make_folder(tmp_path / "my_images", classes=("all",))
    with pytest.raises(TaskError, match="single class"):
        load_task(f"folder:{root}")
    task = load_task(f"folder:{root}", unlabelled_ok=True)
    assert not task.labelled and task.num_samples == 4
    assert "single class folder ('all')" in single_class_note(task) and "unlabelled" in single_class_note(task)
    assert single_class_note(from_folder(make_folder(tmp_path / "two"))) is None


def test_macos_zip_folders_and_hidden_entries_are_no_classes_nor_images(tmp_path):
    root = make_folder(tmp_path / "data", classes=("cat", "dog"))
    for junk in ("__MACOSX/cat", ".ipynb_checkpoints", ".hidden", "cat/.ipynb_checkpoints"):
        (root / junk).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / "__MACOSX" / "cat" / "0.png")
    Image.new("RGB", (8, 8)).save(root / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png")
    (root / "dog" / "._1.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a resource fork, not an image
    task = from_folder(root)
    assert task.class_names == ("cat", "dog") and task.num_samples == 8 and task.skipped_files == 0


def test_an_empty_ranking_target_says_that_a_flat_folder_works(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match=r"holds no images; give a flat folder of images"):
        load_task(f"folder:{tmp_path / 'empty'}", unlabelled_ok=True)
    (tmp_path / "classes" / "a").mkdir(parents=True)
    with pytest.raises(TaskError, match="no readable images .*; a flat folder of images works as a ranking target"):
        load_task(f"folder:{tmp_path / 'classes'}", unlabelled_ok=True)


def test_a_target_that_is_neither_a_folder_nor_a_built_in_task_says_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TaskError, match=rf"no folder 'folder3' \(resolved against {tmp_path}\) and no built-in task "
                                        "of that name; give the folder's absolute path, or a built-in task"):
        load_task("folder3")
    with pytest.raises(TaskError, match=r"\(did you mean digits-color"):
        load_task("digits-colr")
    with pytest.raises(TaskError, match=rf"image folder 'nodir/x' \(resolved against {tmp_path}\) does not exist"):
        load_task("nodir/x")
    assert load_task("digits-color").name == "digits-color"
