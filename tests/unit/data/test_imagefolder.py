"""Image folders and user Datasets as splits: layout, carving, one class mapping, the
preprocessing they are fitted with, streaming (nothing held but labels), the fingerprint."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sweeper.core.config import DataConfig, ModelConfig
from sweeper.core.errors import UserError
from sweeper.data.datasets import splits_from_datasets
from sweeper.data.loading import load_splits
from sweeper.data.preprocess import Preprocessing
from sweeper.data.split import StreamedSplit, TensorSplit, decode_file
from tests.conftest import Shared
from tests.helpers.imagefolders import make_folder, write_image

MODEL = ModelConfig(img_size=16, patch_size=4)


def folder_cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(name="imagefolder", root=str(root), workers=0, **kw)  # type: ignore[arg-type]


def paths(split: StreamedSplit) -> list[str]:
    return split.source.paths  # type: ignore[attr-defined]


def test_missing_splits_are_carved_stratified_disjoint_and_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"train": {"cat": 10, "dog": 20, "owl": 10}})
    cfg = folder_cfg(root, val_fraction=0.2, test_fraction=0.1)
    s = load_splits(cfg, model=MODEL)
    assert s.num_classes == 3 and s.classes == ("cat", "dog", "owl")
    counts = {name: torch.bincount(getattr(s, name).labels, minlength=3).tolist()
              for name in ("train", "val", "test")}
    assert counts == {"train": [7, 14, 7], "val": [2, 4, 2], "test": [1, 2, 1]}  # per class
    files = [set(paths(getattr(s, name))) for name in ("train", "val", "test")]
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert len(files[0] | files[1] | files[2]) == 40
    for split in (s.train, s.val, s.test):  # one mapping: a file's label is its folder's index
        for path, label in zip(paths(split), split.labels.tolist(), strict=True):
            assert s.classes[label] == Path(path).parent.name
    again = load_splits(cfg, model=MODEL)
    other = load_splits(folder_cfg(root, val_fraction=0.2, test_fraction=0.1, seed=1),
                        model=MODEL)
    assert paths(again.val) == paths(s.val) and paths(other.val) != paths(s.val)
    assert again.fingerprint() == s.fingerprint() != other.fingerprint()


def test_val_and_test_folders_are_used_as_they_are(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"train": {"cat": 4, "dog": 4, "owl": 4},
                                           "val": {"dog": 2, "owl": 1}, "test": {"cat": 3}})
    s = load_splits(folder_cfg(root), model=MODEL)
    assert [len(s.train), len(s.val), len(s.test)] == [12, 3, 3]
    assert s.val.labels.tolist() == [1, 1, 2] and s.test.labels.tolist() == [0, 0, 0]
    only_val = make_folder(tmp_path / "v", {"train": {"cat": 6, "dog": 6}, "val": {"cat": 2}})
    t = load_splits(folder_cfg(only_val, test_fraction=0.5), model=MODEL)
    assert len(t.val) == 2 and len(t.test) == 6 and len(t.train) == 6  # test carved only


@pytest.mark.parametrize("layout, message", [
    ("missing", "is not a folder"),
    ("no_train", "has no train/ folder"),
    ("no_classes", "has no class folders"),
    ("one_class", "one class folder \\('cat'\\).*at least 2"),
    ("empty_class", "holds no images"),
    ("class_only_in_test", "'owl' is in .*test but not in .*train"),
    ("corrupt", "cannot read image .*broken.png"),
    ("too_few_to_carve", "'cat' has 2 image"),
    ("empty_val", "the val split of .* is empty"),
])
def test_bad_folders_are_user_errors(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        make_folder(root, {"train": {"cat": 3, "dog": 3}, "val": {"cat": 1}, "test": {"cat": 1}})
    if layout == "no_train":
        (root / "train").rename(root / "training")
    elif layout == "no_classes":
        for p in sorted((root / "train").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    elif layout == "one_class":  # data.root pointed one level too deep, say
        make_folder(root := tmp_path / "cats", {"train": {"cat": 10}})
    elif layout == "empty_class":
        (root / "train" / "owl").mkdir()
        (root / "train" / "owl" / "notes.txt").write_text("not an image")
    elif layout == "class_only_in_test":
        write_image(root / "test" / "owl" / "0.png", (0, 0, 0), 1)
    elif layout == "corrupt":
        data = (root / "train" / "dog" / "000.png").read_bytes()
        (root / "train" / "dog" / "broken.png").write_bytes(data[: len(data) // 2])
    elif layout == "too_few_to_carve":  # one for val, one for test, none left to train on
        make_folder(root := tmp_path / "small", {"train": {"cat": 2, "dog": 5}})
    elif layout == "empty_val":  # 15% of 3 images per class rounds to none
        make_folder(root := tmp_path / "tiny", {"train": {"cat": 3, "dog": 3}})
    fractions = {"val_fraction": 0.5, "test_fraction": 0.5} if layout == "too_few_to_carve" else {}
    with pytest.raises(UserError, match=message):
        load_splits(folder_cfg(root, **fractions), model=MODEL)


def test_dot_named_files_and_folders_are_not_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"train": {"cat": 4, "dog": 4}})
    # what a Mac leaves on a non-Mac disk: an AppleDouble twin that is not a JPEG at all
    (root / "train" / "cat" / "._000.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    (root / "train" / "dog" / ".ipynb_checkpoints").mkdir()
    write_image(root / "train" / "dog" / ".ipynb_checkpoints" / "000-checkpoint.png",
                (0, 0, 0), 1)
    (root / "train" / ".thumbnails").mkdir()  # not a class either
    write_image(root / "train" / ".thumbnails" / "a.png", (0, 0, 0), 1)
    s = load_splits(folder_cfg(root, val_fraction=0.25, test_fraction=0.25), model=MODEL)
    assert s.classes == ("cat", "dog")
    every = [p for name in ("train", "val", "test") for p in paths(getattr(s, name))]
    assert len(every) == 8 and not any("/." in p for p in every)


def test_symlinked_folders_are_followed_as_torchvision_does_and_a_loop_ends(
        tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    store = make_folder(tmp_path / "store", {"x": {"dog": 3, "owl": 2}}) / "x"
    root = make_folder(tmp_path / "pets", {"train": {"cat": 2}})
    (root / "train" / "dog").symlink_to(store / "dog")  # a class kept elsewhere
    (root / "train" / "cat" / "more").symlink_to(store / "owl")  # part of one
    seen = load_splits(folder_cfg(root, val_fraction=0.2, test_fraction=0.2), model=MODEL)
    ours = sorted((Path(p).relative_to(root / "train").as_posix(), label) for name in
                  ("train", "val", "test") for p, label in
                  zip(paths(getattr(seen, name)), getattr(seen, name).labels.tolist(),
                      strict=True))
    theirs = sorted((Path(p).relative_to(root / "train").as_posix(), label)
                    for p, label in ImageFolder(str(root / "train")).samples)
    assert ours == theirs and len(ours) == 7
    (store / "owl" / "back").symlink_to(root / "train" / "cat")  # cat/more/back -> cat: a loop
    again = load_splits(folder_cfg(root, val_fraction=0.2, test_fraction=0.2), model=MODEL)
    assert sum(len(getattr(again, n)) for n in ("train", "val", "test")) == 7


def test_png_jpeg_and_webp_are_decoded_and_fitted_as_the_preprocessing_says(
        tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for i, ext in enumerate(("png", "jpg", "JPEG", "webp")):
        write_image(root / "train" / "cat" / f"{i}.{ext}", (200, 40, 40), i, size=(30, 40))
        write_image(root / "train" / "dog" / f"{i}.{ext}", (40, 200, 40), 10 + i, size=(30, 40))
    cfg = folder_cfg(root, val_fraction=0.25, test_fraction=0.25)
    s = load_splits(cfg, model=MODEL)
    prep = s.preprocessing
    assert prep.img_size == 16
    (xb, yb), = list(s.train.batches(64))
    assert xb.dtype == torch.uint8 and xb.shape == (len(s.train), 3, 16, 16)
    for image, path in zip(xb, paths(s.train), strict=True):
        decoded = decode_file(path)
        assert decoded.shape == (3, 30, 40)
        assert torch.equal(image, prep.fit_image(decoded))
    pil = torch.from_numpy(np.array(Image.open(paths(s.train)[0])))
    assert torch.equal(decode_file(paths(s.train)[0]), pil.permute(2, 0, 1))


def test_every_png_mode_decodes_to_uint8_rgb(tmp_path: Path) -> None:
    """Grey, palette, alpha and 16-bit PNGs (scientific and medical images): all RGB uint8,
    a 16-bit one scaled to 0..255, not read as values up to 65535."""
    deep = np.full((6, 6), 65535, np.uint16)
    deep[0, :3] = (0, 257 * 128, 257 * 64)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    grey = Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6))
    grey.save(tmp_path / "grey.png")
    grey.convert("P").save(tmp_path / "palette.png")
    grey.convert("RGBA").save(tmp_path / "alpha.png")
    decoded = {p.stem: decode_file(str(p)) for p in tmp_path.iterdir()}
    assert all(t.dtype == torch.uint8 and t.shape == (3, 6, 6) for t in decoded.values())
    assert decoded["deep"][:, 0, :4].tolist() == [[0, 128, 64, 255]] * 3
    for name in ("grey", "palette", "alpha"):
        assert torch.equal(decoded[name][0], torch.arange(36, dtype=torch.uint8).view(6, 6))


def test_fit_image_is_timms_eval_transform() -> None:
    """Short side to img_size / crop_pct, then the centre: the pretrained config's crop."""
    prep = Preprocessing(8, (0.5,) * 3, (0.5,) * 3, "bilinear", crop_pct=0.5)
    image = torch.zeros(3, 16, 32, dtype=torch.uint8)
    image[:, 4:12, 12:20] = 255  # the centre 8x8 of the 16x32 image
    out = prep.fit_image(image)  # 16x32 -> (short side 16 = 8 / 0.5) -> centre 8x8
    assert out.shape == (3, 8, 8) and bool((out == 255).all())


def test_timm_pretrained_config_and_overrides_decide_the_preprocessing(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "p", {"train": {"cat": 4, "dog": 4}})
    timm_model = ModelConfig(name="vit_small_patch16_224", img_size=32, patch_size=16)
    s = load_splits(folder_cfg(root), model=timm_model)
    assert s.preprocessing == Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", 0.9)
    own = load_splits(folder_cfg(root, mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.3)),
                      model=timm_model)
    assert own.preprocessing.mean == (0.4, 0.5, 0.6) and own.preprocessing.std == (0.2, 0.2, 0.3)
    assert own.fingerprint() != s.fingerprint()  # the baseline is keyed by what it saw
    digits = load_splits(DataConfig())  # built-in data keeps its own numbers
    assert digits.preprocessing == Preprocessing(32, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
    # a model fine-tuned with another resize (transformers' ViTImageProcessor: bilinear, the
    # whole image) is evaluated as it was trained
    squash = load_splits(folder_cfg(root, interpolation="bilinear", crop_pct=1.0),
                         model=timm_model)
    assert squash.preprocessing == Preprocessing(32, (0.5,) * 3, (0.5,) * 3, "bilinear", 1.0)
    assert squash.fingerprint() != s.fingerprint()
    edge = torch.zeros(3, 40, 40, dtype=torch.uint8)
    edge[:, :, :4] = 255  # a white band at the left edge: a 0.9 crop cuts part of it off
    kept = [p.fit_image(edge)[0].float().mean().item()
            for p in (s.preprocessing, squash.preprocessing)]
    assert kept[0] < kept[1]


def test_batches_are_streamed_in_the_in_memory_order(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"train": {"cat": 9, "dog": 9}})
    s = load_splits(folder_cfg(root, val_fraction=0.2, test_fraction=0.2), model=MODEL)
    images = s.train.take(torch.arange(len(s.train)))
    memory = TensorSplit(images, s.train.labels)
    workers = StreamedSplit(s.train.source, s.train.labels, s.preprocessing, 2,  # type: ignore
                            s.train.identity)
    got = list(workers.indexed(4, shuffle=True, generator=torch.Generator().manual_seed(3)))
    want = list(memory.indexed(4, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert len(got) == len(want) == 3
    for (i1, x1, y1), (i2, x2, y2) in zip(got, want, strict=True):
        assert torch.equal(i1, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)


class Counting:
    """A source that counts its reads (workers=0: in this process)."""

    def __init__(self, n: int) -> None:
        self.n, self.reads = n, 0

    def __call__(self, i: int) -> torch.Tensor:
        self.reads += 1
        return torch.full((3, 16, 16), i % 256, dtype=torch.uint8)


def test_a_streamed_split_holds_only_labels_and_reads_batch_by_batch(tmp_path: Path) -> None:
    prep = Preprocessing(16, (0.5,) * 3, (0.5,) * 3)
    source = Counting(1000)
    split = StreamedSplit(source, torch.zeros(1000, dtype=torch.long), prep, 0, "counting")
    batches = split.batches(10)
    next(batches)
    assert source.reads == 10  # one batch read, not the split
    next(batches)
    assert source.reads == 20
    # what travels to Ray's workers: file names and labels, never pixels
    small = make_folder(tmp_path / "a", {"train": {"cat": 10, "dog": 10}})
    big = make_folder(tmp_path / "b", {"train": {"cat": 40, "dog": 40}})
    size = {n: len(pickle.dumps(load_splits(folder_cfg(r), model=MODEL).train))
            for n, r in ((20, small), (80, big))}
    assert (size[80] - size[20]) / 60 * 0.7 < 200  # bytes per training image: its path
    assert 16 * 16 * 3 > 200


def test_fingerprint_follows_file_changes_without_reading_pixels(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "pets", {"train": {"cat": 5, "dog": 5}})
    cfg = folder_cfg(root)
    first = load_splits(cfg, model=MODEL).fingerprint()
    assert load_splits(cfg, model=MODEL).fingerprint() == first
    target = root / "train" / "cat" / "000.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert load_splits(cfg, model=MODEL).fingerprint() != first


def test_user_datasets_become_streamed_splits(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    root = make_folder(tmp_path / "pets", {"train": {"cat": 4, "dog": 4},
                                           "val": {"cat": 2, "dog": 2},
                                           "test": {"cat": 2, "dog": 1}})
    prep = Preprocessing(16, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9)
    sets = [ImageFolder(str(root / name)) for name in ("train", "val", "test")]
    s = splits_from_datasets(*sets, preprocessing=prep, workers=0, classes=sets[0].classes)
    assert s.num_classes == 2 and s.test.labels.tolist() == [0, 0, 1]
    folder = load_splits(folder_cfg(root), model=MODEL)
    folder_prep = Preprocessing(16, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9)
    assert torch.equal(s.val.take(torch.arange(4)),
                       torch.stack([folder_prep.fit_image(decode_file(p))
                                    for p in paths(folder.val)]))
    floats = torch.utils.data.TensorDataset(torch.rand(6, 3, 16, 16), torch.tensor([0, 1] * 3))
    t = splits_from_datasets(floats, floats, floats, preprocessing=prep, workers=0)
    (xb, yb), = list(t.train.batches(8))
    assert torch.equal(xb, floats.tensors[0].mul(255).round().to(torch.uint8))
    assert t.fingerprint() == splits_from_datasets(floats, floats, floats, prep,
                                                   workers=0).fingerprint()
    normalised = torch.utils.data.TensorDataset(torch.randn(4, 3, 16, 16) * 3,
                                                torch.tensor([0, 1, 0, 1]))
    with pytest.raises(UserError, match="0..1"):
        splits_from_datasets(normalised, floats, floats, preprocessing=prep, workers=0)
    with pytest.raises(UserError, match=r"\[1\] appear in val/test but not in train"):
        zeros = torch.utils.data.TensorDataset(torch.rand(2, 3, 16, 16), torch.tensor([0, 0]))
        splits_from_datasets(zeros, floats, floats, preprocessing=prep, workers=0)
    with pytest.raises(UserError, match="1 class: a classifier needs at least 2"):
        splits_from_datasets(zeros, zeros, zeros, preprocessing=prep, workers=0)


class Items(torch.utils.data.Dataset):
    """Eight items, the odd ones class 1, each as `make(i)` builds it."""

    def __init__(self, make: object) -> None:
        self.make = make

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> object:
        return self.make(i)  # type: ignore[operator]


def _image(i: int) -> torch.Tensor:
    return torch.full((3, 16, 16), 40 * (i % 2), dtype=torch.uint8)


def _missing(i: int) -> object:
    raise KeyError(i)


@pytest.mark.parametrize("make, message", [
    (lambda i: (_image(i), "cat"), r"item 0: a label must be a class index .*'cat'"),
    (lambda i: (_image(i), i % 2 + 0.5), r"a label must be a class index .*got 0.5"),  # not 0
    (lambda i: (_image(i), torch.eye(2)[i % 2]), r"class index .*tensor of shape \(2,\)"),
    (lambda i: {"image": _image(i), "label": i % 2}, r"an \(image, label\) pair, got dict"),
    (lambda i: (_image(i), i % 2, "path"), r"an \(image, label\) pair, got 3 values"),
    (_missing, r"item 0 could not be read \(KeyError: 0\)"),  # the user's code raised
    (lambda i: (_image(i).permute(1, 2, 0), i % 2), r"\[H,W,C\] image needs .permute"),
    (lambda i: (_image(i).permute(1, 2, 0).numpy(), i % 2), r"ndarray .*torch.from_numpy"),
])
def test_a_bad_dataset_item_is_one_user_error_naming_it(make: object, message: str) -> None:
    prep = Preprocessing(16, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9)
    good = Items(lambda i: (_image(i), i % 2))
    with pytest.raises(UserError, match=message):
        splits_from_datasets(Items(make), good, good, preprocessing=prep, workers=0)


def test_a_dataset_ray_cannot_send_is_refused_before_its_items_are_read() -> None:
    prep = Preprocessing(16, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9)
    good = Items(lambda i: (_image(i), i % 2))  # a lambda pickles (cloudpickle)
    locked = Items(lambda i: (_image(i), i % 2))
    locked.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(UserError, match=r"the val dataset cannot be sent to Ray's workers "
                                        r"\(TypeError: cannot pickle '_thread.lock'"):
        splits_from_datasets(good, locked, good, preprocessing=prep, workers=0)


def test_labels_may_be_any_whole_number_type() -> None:
    prep = Preprocessing(16, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.9)
    kinds = [int, np.int64, torch.tensor, lambda v: torch.tensor([v]), float]
    for kind in kinds:
        items = Items(lambda i, kind=kind: (_image(i), kind(i % 2)))
        s = splits_from_datasets(items, items, items, preprocessing=prep, workers=0)
        assert s.train.labels.tolist() == [0, 1] * 4


@pytest.mark.slow
def test_a_sweep_streams_an_image_folder_through_ray_and_exports_its_preprocessing(
        tmp_path: Path, shared: Shared) -> None:
    """Real Ray workers read the folder with DataLoader workers (calibration included);
    export writes the preprocessing the sweep recorded, with the class names."""
    import json

    from sweeper.cli.export import run_export
    from tests.helpers.launch import launch

    root = make_folder(tmp_path / "pets", {"train": {"cat": 12, "dog": 12, "owl": 12},
                                           "val": {"cat": 3, "dog": 3, "owl": 3}})
    space = tmp_path / "quant.yaml"
    space.write_text("techniques:\n  quantize:\n    scheme: {choices: [dynamic8, static8]}\n"
                     "    calibration_batches: 2\n")
    out = tmp_path / "runs"
    proc = launch(out, f"space={space}", "data.name=imagefolder", f"data.root={root}",
                  "data.test_fraction=0.25", "search.trials=2", "search.concurrency=1",
                  "data.mean=0.4,0.5,0.6", shared=shared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = list((out / "sweeps").iterdir())
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["num_classes"] == 3 and meta["classes"] == ["cat", "dog", "owl"]
    assert meta["preprocessing"]["mean"] == [0.4, 0.5, 0.6]
    rows = [json.loads(ln) for ln in (sweep / "trials.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("event") == "complete"]
    assert len(rows) == 2 and all(0 <= r["metrics"]["val_acc"] <= 1 for r in rows), rows
    trial = next(r["trial"] for r in rows if r["params"].get("quantize.scheme") != "static8")
    run_export(sweep.name, trial, [f"output_dir={out}", f"out={tmp_path / 'm.onnx'}"])
    info = json.loads((tmp_path / "m.onnx.json").read_text())
    assert info["classes"] == ["cat", "dog", "owl"] and info["num_classes"] == 3
    assert {k: info[k] for k in meta["preprocessing"]} == meta["preprocessing"]


def test_bmp_tiff_and_netpbm_are_read_as_torchvision_imagefolder_reads_them(
        tmp_path: Path) -> None:
    """ImageFolder's other extensions (BMP, PPM/PGM, TIFF, 16-bit TIFF from microscopes and
    scanners) decode through Pillow to the same uint8 RGB, and a folder of them loads."""
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = torch.from_numpy(rgb).permute(2, 0, 1)
    for ext in ("bmp", "ppm", "tif", "TIFF"):
        Image.fromarray(rgb).save(tmp_path / f"x.{ext}")
        assert torch.equal(decode_file(str(tmp_path / f"x.{ext}")), expected), ext
    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "g.pgm")
    assert torch.equal(decode_file(str(tmp_path / "g.pgm")),
                       torch.from_numpy(grey).expand(3, -1, -1))
    deep = np.full((4, 4), 65535, np.uint16)
    deep[0, :3] = (0, 257 * 128, 257 * 64)
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    assert decode_file(str(tmp_path / "deep.tif"))[:, 0, :4].tolist() == [[0, 128, 64, 255]] * 3
    (tmp_path / "broken.bmp").write_bytes(b"BM not really")
    with pytest.raises(OSError):
        decode_file(str(tmp_path / "broken.bmp"))

    root = tmp_path / "folder"
    for i, ext in enumerate(("bmp", "tif", "ppm", "png")):
        write_image(root / "train" / "cat" / f"{i}.{ext}", (200, 40, 40), i, size=(20, 20))
        write_image(root / "train" / "dog" / f"{i}.{ext}", (40, 200, 40), 10 + i, size=(20, 20))
    s = load_splits(folder_cfg(root, val_fraction=0.25, test_fraction=0.25), model=MODEL)
    assert sum(len(getattr(s, n)) for n in ("train", "val", "test")) == 8
