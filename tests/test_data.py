"""transfer.data: folders and zips in, splits out; bad files named; unusable data refused clearly."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer import DataError
from transfer.balance import choose_balance, train_counts
from transfer.data import load_dataset
from transfer.loading import scan_images


def make_folder(root: Path, counts: dict[str, int], size=(24, 24)) -> Path:
    for k, (label, count) in enumerate(counts.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shade = (i * 37) % 255
            Image.new("RGB", size, (shade, 255 - shade, 10 * k)).save(root / label / f"{label}-{i}.png")
    return root


def zip_folder(folder: Path, target: Path, *, wrap: str | None = None, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                archive.write(path, f"{wrap}/{name}" if wrap else name)
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return target


def test_class_folders_get_a_stratified_fixed_seed_split(tmp_path):
    root = make_folder(tmp_path / "pets", {"cat": 10, "dog": 10})
    first, second = load_dataset(root), load_dataset(root)
    assert first.classes == ["cat", "dog"]
    assert (len(first.train), len(first.val), len(first.test)) == (16, 4, 0)
    assert first.class_counts() == {"cat": {"train": 8, "val": 2}, "dog": {"train": 8, "val": 2}}
    assert [s.relpath for s in first.val] == [s.relpath for s in second.val]  # same seed, same split
    assert not {s.relpath for s in first.train} & {s.relpath for s in first.val}
    assert first.split_from == "stratified"


def test_own_train_val_test_folders_are_used(tmp_path):
    make_folder(tmp_path / "d" / "train", {"a": 5, "b": 5})
    make_folder(tmp_path / "d" / "val", {"a": 2, "b": 2})
    make_folder(tmp_path / "d" / "test", {"a": 3, "b": 3})
    data = load_dataset(tmp_path / "d")
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 6)
    assert data.split_from == "folders"
    assert all(s.relpath.startswith("test/") for s in data.test)


def test_zip_with_one_wrapping_folder(tmp_path):
    folder = make_folder(tmp_path / "src", {"cat": 4, "dog": 4})
    archive = zip_folder(folder, tmp_path / "pets.zip", wrap="my photos")
    data = load_dataset(archive)
    assert data.classes == ["cat", "dog"] and data.name == "my photos"
    scan = scan_images(data, data.train, shorter_side=16, keep=True)
    images, hashes, errors = scan.images, scan.hashes, scan.errors
    assert all(image.mode == "RGB" and min(image.size) == 16 for image in images)
    assert errors == [None] * len(data.train) and len(set(hashes)) == len(hashes)


def test_bad_files_are_skipped_and_named_junk_is_ignored(tmp_path):
    root = make_folder(tmp_path / "d", {"cat": 4, "dog": 4})
    (root / "cat" / "notes.pdf").write_bytes(b"%PDF-1.4 not an image")
    (root / "dog" / "fake.jpg").write_text("definitely not a jpeg")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0junk")
    (root / "readme.txt").write_text("stray file at the top")
    data = load_dataset(root)
    skipped = dict(data.skipped)
    assert skipped["cat/notes.pdf"] == "not an image (.pdf)"
    assert "not an image" in skipped["dog/fake.jpg"]
    assert "readme.txt" in skipped
    assert not any(".DS_Store" in name for name in skipped)
    assert len(data.train) + len(data.val) == 8


def test_truncated_image_fails_at_decode_and_is_reported(tmp_path):
    root = make_folder(tmp_path / "d", {"cat": 4, "dog": 4})
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "cat" / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    data = load_dataset(root)  # the header is intact: scanning keeps it
    samples = data.train + data.val
    errors = scan_images(data, samples, shorter_side=16).errors
    failed = [(s.relpath, e) for s, e in zip(samples, errors) if e]
    assert failed and failed[0][0] == "cat/cut.jpg" and "truncated" in failed[0][1]


def test_fewer_than_two_classes_is_refused(tmp_path):
    root = make_folder(tmp_path / "d", {"cat": 5})
    with pytest.raises(DataError, match="at least 2 class folders"):
        load_dataset(root)


def test_class_with_only_bad_files_is_refused_by_name(tmp_path):
    root = make_folder(tmp_path / "d", {"cat": 5, "dog": 5})
    (root / "bird").mkdir()
    (root / "bird" / "x.jpg").write_text("not a picture")
    with pytest.raises(DataError, match="class 'bird' has no usable training image.*bird/x.jpg"):
        load_dataset(root)


def test_empty_class_folder_is_refused(tmp_path):
    root = make_folder(tmp_path / "d", {"cat": 5, "dog": 5})
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="class 'empty'"):
        load_dataset(root)


def test_missing_path_and_non_zip_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder or a zip"):
        load_dataset(tmp_path / "file.txt")


@pytest.mark.parametrize("evil", ["../outside.png", "/etc/evil.png", "cat/../../up.png"])
def test_zip_with_unsafe_paths_is_refused(tmp_path, evil):
    folder = make_folder(tmp_path / "src", {"cat": 3, "dog": 3})
    archive = zip_folder(folder, tmp_path / "evil.zip", extra={evil: b"x"})
    with pytest.raises(DataError, match="unsafe path"):
        load_dataset(archive)


def test_imbalance_is_warned_and_weighted(tmp_path):
    root = make_folder(tmp_path / "d", {"common": 30, "rare": 5})
    data = load_dataset(root)
    assert any("imbalanced" in w for w in data.warnings)
    balance = choose_balance(train_counts(data), "auto")
    assert balance.method == "weights" and balance.minority == ("rare",)
    weights = balance.class_weights([sample.label for sample in data.train], 2)
    assert weights[1] > 4 * weights[0]
