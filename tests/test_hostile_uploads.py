"""Hostile uploads, built at test time. Each test first shows the attack is real (what naive code
would do with the file), then that our loader refuses it or skips it by name, and writes nothing."""

from __future__ import annotations

import io
import os
import pickle
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from transfer import DataError
from transfer.data import Limits, load_dataset
from transfer.loading import scan_images
from zoo import ZooError
from zoo.images import ImageError, open_image


def png_bytes(colour=(200, 30, 30), size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def good_members() -> dict[str, bytes]:
    return {f"{label}/{i}.png": png_bytes((i * 40, 200 if label == "cat" else 0, 90)) for label in ("cat", "dog")
            for i in range(4)}


def write_zip(path: Path, members: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def naive_extract(archive_path: Path, destination: Path) -> list[Path]:
    """What a hand-written extractor does: join the member name to the destination and write."""
    written = []
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            target = Path(os.path.normpath(destination / info.filename))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
            written.append(target)
    return written


def test_zip_slip_is_refused_and_nothing_is_written(tmp_path):
    evil = write_zip(tmp_path / "evil.zip", {**good_members(), "../../escaped.png": png_bytes()})
    sandbox = tmp_path / "sandbox" / "a" / "b"
    written = naive_extract(evil, sandbox)
    assert (tmp_path / "sandbox" / "escaped.png") in written  # the attack is real: it lands outside
    before = set(tmp_path.rglob("*"))
    with pytest.raises(DataError, match=r"unsafe path '\.\./\.\./escaped\.png'"):
        load_dataset(evil)
    assert set(tmp_path.rglob("*")) == before  # we never extract anything anywhere


def test_absolute_path_entry_is_refused(tmp_path):
    evil = write_zip(tmp_path / "abs.zip", {**good_members(), "/tmp/owned.png": png_bytes()})
    assert zipfile.ZipFile(evil).namelist()[-1] == "/tmp/owned.png"  # really stored absolute
    with pytest.raises(DataError, match="unsafe path"):
        load_dataset(evil)


def test_symlink_entry_is_refused(tmp_path):
    evil = write_zip(tmp_path / "link.zip", good_members(), symlinks={"cat/passwd.png": "/etc/passwd"})
    info = zipfile.ZipFile(evil).getinfo("cat/passwd.png")
    assert stat.S_ISLNK(info.external_attr >> 16)  # a symlink to a system file, for unzip(1) and friends
    with pytest.raises(DataError, match="symbolic link 'cat/passwd.png'"):
        load_dataset(evil)


def test_symlink_in_a_folder_is_not_followed(tmp_path):
    root = tmp_path / "photos"
    for name, content in good_members().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes((1, 2, 3)))
    (root / "cat" / "sneaky.png").symlink_to(secret)
    assert (root / "cat" / "sneaky.png").read_bytes() == secret.read_bytes()  # naive reading follows it
    data = load_dataset(root)
    assert ("cat/sneaky.png", "symbolic link, not followed") in data.skipped
    assert "cat/sneaky.png" not in {s.relpath for s in data.train + data.val}


def test_zip_bomb_is_refused_on_the_bytes_actually_read(tmp_path):
    flat = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(flat, "BMP")  # a valid 36 MB image of zeros
    bomb = write_zip(tmp_path / "bomb.zip", {**good_members(), "cat/flat.bmp": flat.getvalue()})
    info = zipfile.ZipFile(bomb).getinfo("cat/flat.bmp")
    assert info.file_size / info.compress_size > 500  # the attack is real: tiny on disk, huge unpacked
    data = load_dataset(bomb)  # scanning reads headers only: 12 MP is within the pixel limit
    with pytest.raises(DataError, match="flat.bmp expands .*x when unpacked: the zip looks like a zip bomb"):
        scan_images(data, data.train + data.val, shorter_side=16)
    with pytest.raises(DataError, match="flat.bmp is larger than 16 MB"):
        scan_images(load_dataset(bomb, limits=Limits(max_file_bytes=16 << 20)), data.train + data.val,
                      shorter_side=16)


def patch_declared_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size a zip declares for `member` (local header and central record)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(member).header_offset
    raw[offset + 22:offset + 26] = size.to_bytes(4, "little")
    position = 0
    while (position := raw.find(b"PK\x01\x02", position + 1)) != -1:
        name_length = int.from_bytes(raw[position + 28:position + 30], "little")
        if raw[position + 46:position + 46 + name_length] == member.encode():
            raw[position + 24:position + 28] = size.to_bytes(4, "little")
            break
    path.write_bytes(bytes(raw))


def test_lying_zip_header_cannot_smuggle_extra_bytes(tmp_path):
    """An entry that declares a small size but holds far more: reading stops at the declared size
    and the CRC check fails, so the entry is skipped as damaged, never read in full."""
    path = write_zip(tmp_path / "liar.zip", {**good_members(), "dog/liar.png": png_bytes() + b"\0" * 500_000})
    patch_declared_size(path, "dog/liar.png", len(png_bytes()))
    assert zipfile.ZipFile(path).getinfo("dog/liar.png").file_size == len(png_bytes())
    data = load_dataset(path)
    samples = data.train + data.val
    errors = scan_images(data, samples, shorter_side=16).errors
    problems = dict(data.skipped) | {s.relpath: e for s, e in zip(samples, errors) if e}
    assert "damaged zip entry" in problems["dog/liar.png"], problems


def test_decompression_bomb_image_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 12_000)).save(bomb)  # 144 MP, a few hundred KB on disk
    assert bomb.stat().st_size < 2_000_000
    with Image.open(bomb) as image:
        assert image.size[0] * image.size[1] < 2 * Image.MAX_IMAGE_PIXELS  # Pillow itself only warns
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageError, match="over the limit"):
        open_image(bomb)
    assert not decoded  # refused from the header, before a single pixel was decoded


def test_decompression_bomb_inside_an_upload_is_skipped_by_name(tmp_path):
    big = io.BytesIO()
    Image.new("1", (9_000, 9_000)).save(big, "PNG")
    archive = write_zip(tmp_path / "u.zip", {**good_members(), "dog/bomb.png": big.getvalue()})
    data = load_dataset(archive, limits=Limits(max_pixels=50_000_000))
    assert dict(data.skipped)["dog/bomb.png"].startswith("9000x9000 pixels is over the limit")


def test_macos_junk_is_ignored_and_stray_files_are_named(tmp_path):
    junk = {"__MACOSX/cat/._0.png": b"\0\x05\x16\x07junk", ".DS_Store": b"junk", "cat/Thumbs.db": b"junk",
            "dog/.hidden.png": png_bytes(), "cat/report.pdf": b"%PDF-1.4", "dog/truncated.png": png_bytes()[:30]}
    data = load_dataset(write_zip(tmp_path / "mac.zip", {**good_members(), **junk}))
    skipped = dict(data.skipped)
    assert skipped == {"cat/report.pdf": "not an image (.pdf)", "dog/truncated.png": skipped["dog/truncated.png"]}
    assert len(data.train) + len(data.val) == 8


def test_too_many_files_is_refused(tmp_path):
    archive = write_zip(tmp_path / "many.zip", good_members())
    with pytest.raises(DataError, match="over the limit of 5"):
        load_dataset(archive, limits=Limits(max_files=5))


def test_total_size_limit_counts_bytes_read(tmp_path):
    archive = write_zip(tmp_path / "big.zip", good_members())
    sizes = [info.file_size for info in zipfile.ZipFile(archive).infolist()]
    data = load_dataset(archive, limits=Limits(max_total_bytes=sum(sizes) - 1))
    with pytest.raises(DataError, match=r"larger than [0-9.]+ KB in all"):
        scan_images(data, data.train + data.val, shorter_side=16)


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_never_unpickled(tmp_path, zoo_path, digits_small):
    from transfer.fit import fit
    from zoo.catalog import load_model

    result = fit(digits_small, strategy="feature-extractor", image_size=32, zoo=zoo_path, name="pickle-target")
    marker = tmp_path / "code-ran"
    payload = pickle.dumps({"weights": _Payload(marker)})
    pickle.loads(payload)
    assert marker.exists()  # the attack is real: unpickling runs code
    marker.unlink()
    (result.path / "model.safetensors").write_bytes(payload)  # swap the weights for the pickle
    (result.path / "pytorch_model.bin").write_bytes(payload)  # and offer a .bin next to it
    with pytest.raises(ZooError, match="pickle-target.*model.safetensors"):
        load_model("pickle-target", zoo=zoo_path)
    assert not marker.exists()
