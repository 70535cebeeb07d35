"""Upload checks without a server: model descriptors, weights against their architecture, dataset zips, images."""

from __future__ import annotations

import io
import pickle
import stat
import zipfile

import pytest

from neurflow.service.errors import Invalid, TooLarge, Unsupported
from neurflow.service.intake.archives import extract_dataset
from neurflow.service.intake.images import decode_image
from neurflow.service.intake.models import check_weights, parse_descriptor
from neurflow.service.intake.weightfile import read_safetensors_header

from ..helpers import dataset_entries, make_zip, png_bytes

LIMITS = {"max_entries": 100, "max_bytes": 10 * 1024 * 1024, "max_pixels": 10_000_000}


def test_descriptor_checks():
    desc, warnings = parse_descriptor(b'{"arch": "resnet18", "num_classes": 3, "input_size": 32, "std": [1, 1, 1]}')
    assert desc.mean == [0.485, 0.456, 0.406] and desc.std == [1, 1, 1]
    assert len(warnings) == 1 and "mean left out" in warnings[0] and "[0.485, 0.456, 0.406]" in warnings[0]
    given = b'{"arch": "resnet18", "num_classes": 3, "input_size": 32, "mean": [0, 0, 0], "std": [1, 1, 1]}'
    assert parse_descriptor(given)[1] == []
    with pytest.raises(Invalid, match="not valid JSON"):
        parse_descriptor(b"{arch")
    with pytest.raises(Invalid, match="num_classes"):
        parse_descriptor(b'{"arch": "resnet18", "num_classes": 0, "input_size": 32}')
    with pytest.raises(Invalid, match="class_names has 1"):
        parse_descriptor(b'{"arch": "resnet18", "num_classes": 3, "input_size": 32, "class_names": ["a"]}')



def test_weights_checked_against_architecture(assets, tmp_path):
    desc, _ = parse_descriptor(b'{"arch": "resnet18", "num_classes": 3, "input_size": 32}')
    layers = dict(check_weights(assets["weights"], desc))
    assert layers["layer4"] == (512, 1, 1) and layers["fc"] == (3,)
    with pytest.raises(Invalid, match="shape conflicts: fc.bias"):
        check_weights(assets["weights"], parse_descriptor(b'{"arch": "resnet18", "num_classes": 5, "input_size": 32}')[0])
    with pytest.raises(Invalid, match="missing keys"):
        check_weights(assets["weights"], parse_descriptor(b'{"arch": "resnet34", "num_classes": 3, "input_size": 32}')[0])
    with pytest.raises(Invalid, match="unknown torchvision architecture"):
        check_weights(assets["weights"], parse_descriptor(b'{"arch": "resnet9000", "num_classes": 3, "input_size": 32}')[0])
    pkl = tmp_path / "model.safetensors"
    pkl.write_bytes(pickle.dumps({"w": [1, 2, 3]}))  # a pickle renamed .safetensors is refused unread
    with pytest.raises(Unsupported, match="not a safetensors file"):
        read_safetensors_header(pkl)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((40).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape": [9], "data_offsets": [0, 36]}}')
    with pytest.raises((Invalid, Unsupported)):
        read_safetensors_header(bad)



def _zip_with(info: zipfile.ZipInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok/a.png", png_bytes((1, 2, 3)))
        zf.writestr(info, data)
    return buf.getvalue()



@pytest.mark.parametrize("name, error", [
    ("../evil.png", "path traversal"),
    ("a/../../evil.png", "path traversal"),
    ("/etc/evil.png", "absolute"),
    ("C:/evil.png", "absolute"),
    ("notes.txt", "not a PNG or JPEG"),
    ("a/b/c/d/e.png", "nested too deep"),
])
def test_zip_rejections(tmp_path, name, error):
    src = tmp_path / "d.zip"
    src.write_bytes(_zip_with(zipfile.ZipInfo(name)))
    with pytest.raises(Invalid, match=error):
        extract_dataset(src, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "out").exists()



def test_zip_symlink_bomb_and_limits(tmp_path):
    link = zipfile.ZipInfo("link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    src = tmp_path / "d.zip"
    src.write_bytes(_zip_with(link, b"/etc/passwd"))
    with pytest.raises(Invalid, match="symbolic link"):
        extract_dataset(src, tmp_path / "out", **LIMITS)
    src.write_bytes(make_zip({f"{i}.png": png_bytes((1, 1, 1)) for i in range(5)}))
    with pytest.raises(TooLarge, match="entries"):
        extract_dataset(src, tmp_path / "out", **{**LIMITS, "max_entries": 4})
    with pytest.raises(TooLarge, match="expands"):
        extract_dataset(src, tmp_path / "out", **{**LIMITS, "max_bytes": 100})
    src.write_bytes(make_zip({"fake.png": b"not an image"}))
    with pytest.raises(Invalid, match="fake.png cannot be decoded"):
        extract_dataset(src, tmp_path / "out", **LIMITS)
    src.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(Invalid, match="not a valid zip"):
        extract_dataset(src, tmp_path / "out", **LIMITS)



def test_zip_layouts(tmp_path):
    src = tmp_path / "d.zip"
    src.write_bytes(make_zip({f"wrapped/{k}": v for k, v in dataset_entries(2).items()} | {"__MACOSX/._x": b"",
                                                                                          "wrapped/.DS_Store": b""}))
    info = extract_dataset(src, tmp_path / "out", **LIMITS)
    assert (info.n_images, info.classes) == (6, ["blue", "green", "red"])
    assert (tmp_path / "out/images/red/0.png").is_file()
    src.write_bytes(make_zip({"a.png": png_bytes((0, 0, 0)), "b.jpg": _jpeg()}))
    info = extract_dataset(src, tmp_path / "flat", **LIMITS)
    assert (info.n_images, info.classes) == (2, [])



def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG")
    return buf.getvalue()



def test_decode_image_limits():
    assert decode_image(png_bytes((5, 5, 5)), 10_000).size == (40, 40)
    with pytest.raises(TooLarge, match="pixels"):
        decode_image(png_bytes((5, 5, 5)), 100)
    with pytest.raises(Invalid, match="cannot be decoded"):
        decode_image(b"GIF89a....", 10_000)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    with pytest.raises(Invalid, match="PNG and JPEG"):
        decode_image(buf.getvalue(), 10_000)
