from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from neurflow.core.images import Geometry, ImageSet, Preprocess, list_images, open_rgb
from neurflow.core.patches import build_index, crop_positions, make_patches


def test_reference_crop_counts():
    index = build_index(2, 64, (1.0, 0.5, 0.25), 0.5)
    assert len(index) == 2 * (1 + 9 + 49)
    # granularity-major, then image, then row-major position
    assert index.granularity[:2].tolist() == [1.0, 1.0]
    assert index.image[2:11].tolist() == [0] * 9
    assert index.box[3].tolist() == [16, 0, 48, 32]


def test_border_is_dropped_when_stride_does_not_divide():
    side, offsets = crop_positions(100, 0.3, 0.5)
    assert side == 30 and offsets == [0, 15, 30, 45, 60]  # 75 would overrun: 70..100 is never covered
    assert len(build_index(1, 100, (0.3,), 0.5)) == 25


def test_patches_are_bilinear_resized_crops():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    index = build_index(2, 16, (1.0, 0.5), 0.5)
    patches = make_patches(images, index, [0, 1, 2 + 9 + 4])
    torch.testing.assert_close(patches[0], images[0])
    x0, y0, x1, y1 = index.box[15].tolist()
    expected = F.interpolate(images[1:2, :, y0:y1, x0:x1], size=(16, 16), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(patches[2], expected)


def test_geometry_maps_back_to_source_pixels():
    g = Geometry(width=100, height=80, input_size=64)  # shorter side 80 -> scale 1.25, crop offset x=10
    assert g.to_source((0, 0, 64, 64)) == [10, 0, 90, 80]
    assert g.to_source((32, 32, 64, 64)) == [50, 40, 90, 80]


def test_preprocess_resizes_shorter_side_then_centre_crops(tmp_path):
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, :20] = 255  # left quarter white: cut away by the centre crop
    arr[:, 20:60] = 128
    Image.fromarray(arr).save(tmp_path / "a.png")
    pre = Preprocess(20, [0, 0, 0], [1, 1, 1])
    px = pre(open_rgb(tmp_path / "a.png"))
    assert px.shape == (3, 20, 20)
    assert px[:, :, 1:-1].max().item() == pytest.approx(128 / 255, abs=0.02)


def test_image_folder_is_sorted_recursive_and_rejects_garbage(tmp_path):
    for rel in ("b/2.png", "a/1.jpg", "a/10.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (10, 12), "red").save(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/1.jpg", "a/10.png", "b/2.png"]
    images = ImageSet.from_folder(tmp_path, Preprocess(8, [0.5] * 3, [0.5] * 3))
    assert images.paths == ["a/1.jpg", "a/10.png", "b/2.png"] and images.sizes[0] == (10, 12)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="cannot decode image .*bad.png"):
        ImageSet.from_folder(tmp_path, Preprocess(8, [0.5] * 3, [0.5] * 3))
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nope")
