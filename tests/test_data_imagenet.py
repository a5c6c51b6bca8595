"""ImageNet subsets on generated ImageFolder trees of real JPEG files: subsets, layouts, caps, checks, errors."""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import ImageNetInfo
from timm.data.auto_augment import RandAugment

from patchorder.data import CorruptImageError, DataConfigError, ImageNetSubsetDataModule
from patchorder.data.subsets import bundled_wnids

# Reference lists, typed from their sources: fast.ai's Imagenette/Imagewoof and CMC's imagenet100.txt.
IMAGENETTE = "n01440764 n02102040 n02979186 n03000684 n03028079 n03394916 n03417042 n03425413 n03445777 n03888257".split()
IMAGEWOOF = "n02086240 n02087394 n02088364 n02089973 n02093754 n02096294 n02099601 n02105641 n02111889 n02115641".split()
IMAGENET100 = """
n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245 n01773797 n01735189
n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148 n03530642 n04435653 n02086910 n02859443
n13040303 n03594734 n02085620 n02099849 n01558993 n04493381 n02109047 n04111531 n02877765 n04429376 n02009229
n01978455 n02106550 n01820546 n01692333 n07714571 n02974003 n02114855 n03785016 n03764736 n03775546 n02087046
n07836838 n04099969 n04592741 n03891251 n02701002 n03379051 n02259212 n07715103 n03947888 n04026417 n02326432
n03637318 n01980166 n02113799 n02086240 n03903868 n02483362 n04127249 n02089973 n03017168 n02093428 n02804414
n02396427 n04418357 n02172182 n01729322 n02113978 n03787032 n02089867 n02119022 n03777754 n04238763 n02231487
n03032252 n02138441 n02104029 n03837869 n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630
n03584829 n02123045 n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672
n02090622""".split()

EXTRA = ["n01443537", "n01484850"]
ALL_WNIDS = sorted(IMAGENETTE + EXTRA)  # the 12 class folders of the test tree
TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 2
SIZE = 32


def colour_of(wnid: str) -> int:
    """Every image of a class is filled with this grey level, so a loaded image reveals its true class."""
    return 20 + 20 * ALL_WNIDS.index(wnid)


def wnid_of_colour(level: float) -> str:
    return ALL_WNIDS[int(round((level - 20) / 20))]


def save_image(path: Path, wnid: str, grayscale: bool = False) -> None:
    pixels = np.full((30, 40, 3), colour_of(wnid), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0], mode="L") if grayscale else Image.fromarray(pixels)
    image.save(path, format="JPEG", quality=95)


def make_tree(root: Path, train_classes=ALL_WNIDS, val_classes=ALL_WNIDS, flat_val=False) -> Path:
    for wnid in train_classes:
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(TRAIN_PER_CLASS):
            save_image(folder / f"{wnid}_{i}.JPEG", wnid, grayscale=(i == 0 and wnid == ALL_WNIDS[1]))
    (root / "val").mkdir(parents=True, exist_ok=True)
    rows = []
    for c, wnid in enumerate(val_classes):
        for i in range(VAL_PER_CLASS):
            if flat_val:
                image_id = f"ILSVRC2012_val_{c * VAL_PER_CLASS + i + 1:08d}"
                save_image(root / "val" / f"{image_id}.JPEG", wnid)
                rows.append((image_id, f"{wnid} 1 2 30 40 {wnid} 5 6 20 20"))
            else:
                (root / "val" / wnid).mkdir(exist_ok=True)
                save_image(root / "val" / wnid / f"val_{wnid}_{i}.JPEG", wnid, grayscale=(i == 0 and wnid == ALL_WNIDS[1]))
    if flat_val:
        with open(root / "LOC_val_solution.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ImageId", "PredictionString"])
            writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def flat_tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("imagenet_flat"), flat_val=True)


def module(root, **kwargs) -> ImageNetSubsetDataModule:
    return ImageNetSubsetDataModule(root=str(root), **{"image_size": SIZE, "batch_size": 4, **kwargs})


def true_wnids(data: ImageNetSubsetDataModule, split: str) -> list[str]:
    """The class each evaluation image really shows, read back from its pixels."""
    dataset = data.datasets[split]
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    levels = data.to_display(images).float().mean(dim=(1, 2, 3))
    return [wnid_of_colour(level.item()) for level in levels]


# --- bundled lists -----------------------------------------------------------------------------------------
def test_bundled_lists_match_their_sources():
    assert bundled_wnids("imagenette") == IMAGENETTE
    assert bundled_wnids("imagewoof") == IMAGEWOOF
    assert bundled_wnids("imagenet100") == IMAGENET100
    imagenet_1k = set(ImageNetInfo().label_names())
    for wnids, size in ((IMAGENETTE, 10), (IMAGEWOOF, 10), (IMAGENET100, 100)):
        assert len(set(wnids)) == size and set(wnids) <= imagenet_1k


# --- subsets -------------------------------------------------------------------------------------------------
def test_inline_list_subset(tree):
    chosen = [ALL_WNIDS[5], ALL_WNIDS[0], ALL_WNIDS[9]]
    data = module(tree, subset=chosen)
    assert data.class_names == sorted(chosen) and data.num_classes == 3
    data.setup("fit")
    assert data.describe()["counts"] == {"train": 9, "val": 6, "test": 6}
    # Labels are indices into the sorted list: every file sits in its label's folder ...
    for path, label in data.datasets["train"].samples:
        assert Path(path).parent.name == data.class_names[label]
    # ... and every evaluation image shows its label's class (read back from the pixels).
    assert true_wnids(data, "val") == [data.class_names[t] for t in data.datasets["val"].targets]
    assert module(tree, subset=",".join(chosen)).class_names == sorted(chosen)


def test_bundled_subset(tree):
    data = module(tree, subset="imagenette")
    assert data.class_names == sorted(IMAGENETTE)
    assert data.describe()["subset"] == {"spec": "imagenette", "kind": "bundled", "num_classes": 10}


def test_all_subset(tree):
    assert module(tree, subset="all").class_names == ALL_WNIDS


def test_class_list_file(tree, tmp_path):
    listing = tmp_path / "classes.txt"
    listing.write_text(f"# my classes\n\n{ALL_WNIDS[3]}  # a comment\n{ALL_WNIDS[1]} goldfish, Carassius auratus\n")
    data = module(tree, subset=str(listing))
    assert data.class_names == [ALL_WNIDS[1], ALL_WNIDS[3]]
    assert data.describe()["subset"]["kind"] == "file"


def test_class_list_file_errors_name_the_line(tree, tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text(f"# header\n{ALL_WNIDS[0]}\ntench\n")
    with pytest.raises(DataConfigError, match=r"bad.txt, line 3: 'tench' does not start with a wnid"):
        module(tree, subset=str(listing))
    listing.write_text(f"{ALL_WNIDS[0]}\n{ALL_WNIDS[1]}\n{ALL_WNIDS[0]}\n")
    with pytest.raises(DataConfigError, match=r"line 3: n\d+ is listed twice \(first on line 1\)"):
        module(tree, subset=str(listing))
    listing.write_text("# nothing here\n")
    with pytest.raises(DataConfigError, match="lists no wnids"):
        module(tree, subset=str(listing))


def test_random_subset_is_reproducible(tree):
    first = module(tree, subset="random:4:0").class_names
    assert first == module(tree, subset="random:4:0").class_names
    assert first != module(tree, subset="random:4:1").class_names
    assert len(first) == 4 and first == sorted(first) and set(first) <= set(ALL_WNIDS)
    assert module(tree, subset="random:12:7").class_names == ALL_WNIDS


@pytest.mark.parametrize("spec", ["random:four:0", "random:4", "random:-1:0", "random:4:0:1", "random"])
def test_bad_random_spec(tree, spec):
    with pytest.raises(DataConfigError, match="random:N:SEED"):
        module(tree, subset=spec)


def test_random_subset_too_large(tree):
    with pytest.raises(DataConfigError, match="asks for 13 classes but .* has only 12 class folders"):
        module(tree, subset="random:13:0")
    with pytest.raises(DataConfigError, match="N must be at least 1"):
        module(tree, subset="random:0:0")


def test_unknown_subset_and_bad_inline_entries(tree):
    with pytest.raises(DataConfigError, match="not a bundled list"):
        module(tree, subset="imagenet1k")
    with pytest.raises(DataConfigError, match="not wnids"):
        module(tree, subset=[ALL_WNIDS[0], "tench"])
    with pytest.raises(DataConfigError, match="more than once"):
        module(tree, subset=[ALL_WNIDS[0], ALL_WNIDS[0]])


def test_only_chosen_class_folders_are_listed(tree, monkeypatch):
    listed = []
    real_scandir = os.scandir

    def recording_scandir(path):
        listed.append(Path(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    chosen = ALL_WNIDS[:2]
    module(tree, subset=chosen).setup()
    class_folders = {p.name for p in listed if p.parent.name in ("train", "val")}
    assert class_folders == set(chosen)


# --- caps and hold-out ---------------------------------------------------------------------------------------
def test_cap_per_class_is_deterministic_and_per_class(tree):
    chosen = ALL_WNIDS[:3]
    capped = module(tree, subset=chosen, max_train_per_class=2, max_val_per_class=1)
    capped.setup()
    train = capped.datasets["train"].samples
    assert np.bincount([label for _, label in train]).tolist() == [2, 2, 2]
    assert capped.describe()["counts"] == {"train": 6, "val": 3, "test": 3}
    full = {path for path, _ in module(tree, subset=chosen).datasets["train"].samples}
    assert {path for path, _ in train} <= full
    assert train == module(tree, subset=chosen, max_train_per_class=2, max_val_per_class=1).datasets["train"].samples
    # A class keeps the same images whatever other classes are in the subset.
    other = module(tree, subset=[chosen[0], ALL_WNIDS[7]], max_train_per_class=2)
    pick = lambda samples: {p for p, _ in samples if Path(p).parent.name == chosen[0]}
    assert pick(train) == pick(other.datasets["train"].samples)
    with pytest.raises(DataConfigError, match="max_train_per_class=0"):
        module(tree, subset=chosen, max_train_per_class=0)


def test_holdout_validates_on_part_of_train(tree):
    data = module(tree, subset=ALL_WNIDS[:4], holdout_fraction=1 / 3)
    train = {p for p, _ in data.datasets["train"].samples}
    held = data.datasets["val"].samples
    assert len(held) == 4 and np.bincount([label for _, label in held]).tolist() == [1, 1, 1, 1]
    assert not train & {p for p, _ in held} and all("/train/" in p for p, _ in held)
    assert all("/val/" in p for p, _ in data.datasets["test"].samples)
    assert data.describe()["val_source"] == "holdout_of_train"


# --- flat val folder + LOC_val_solution.csv ------------------------------------------------------------------
def test_flat_val_with_csv(flat_tree):
    chosen = ALL_WNIDS[2:6]
    data = module(flat_tree, subset=chosen)
    data.setup()
    assert data.describe()["val_layout"] == "flat_with_csv"
    assert len(data.datasets["val"]) == 4 * VAL_PER_CLASS
    assert true_wnids(data, "test") == [data.class_names[t] for t in data.datasets["test"].targets]


def test_flat_val_csv_given_elsewhere(flat_tree, tmp_path):
    moved = tmp_path / "labels.csv"
    moved.write_text((flat_tree / "LOC_val_solution.csv").read_text())
    data = module(flat_tree, subset=ALL_WNIDS[:2], val_labels=str(moved))
    assert data.val_labels == moved and len(data.datasets["val"]) == 2 * VAL_PER_CLASS


def test_flat_val_errors(tmp_path):
    root = make_tree(tmp_path / "r", train_classes=ALL_WNIDS[:3], val_classes=ALL_WNIDS[:2], flat_val=True)
    with pytest.raises(DataConfigError, match=rf"no validation images for 1 chosen classes: {ALL_WNIDS[2]}"):
        module(root, subset=ALL_WNIDS[:3]).setup()
    (root / "val" / "ILSVRC2012_val_00000001.JPEG").unlink()
    with pytest.raises(DataConfigError, match="1 images listed in .* are not in"):
        module(root, subset=ALL_WNIDS[:2]).setup()
    (root / "LOC_val_solution.csv").write_text("Image,Label\nx,y\n")
    with pytest.raises(DataConfigError, match="must have the columns ImageId and PredictionString"):
        module(root, subset=ALL_WNIDS[:2]).setup()
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000002,\n")
    with pytest.raises(DataConfigError, match="line 2: needs an ImageId and a PredictionString"):
        module(root, subset=ALL_WNIDS[:2]).setup()
    (root / "LOC_val_solution.csv").unlink()
    with pytest.raises(DataConfigError, match="LOC_val_solution.csv does not exist.*data.val_labels"):
        module(root, subset=ALL_WNIDS[:2])


# --- loading, transforms, probe, describe --------------------------------------------------------------------
def test_loaders_shapes_and_grayscale(tree):
    data = module(tree, subset=ALL_WNIDS[:3], batch_size=4, drop_last_train=True)
    for loader in (data.train_dataloader(), data.val_dataloader(), data.test_dataloader()):
        images, labels = next(iter(loader))
        assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
    assert [len(y) for _, y in data.train_dataloader()] == [4, 4]  # 9 images, last partial batch dropped
    # ALL_WNIDS[1]'s first val image is a grayscale JPEG: it loads as 3 equal channels.
    val = data.datasets["val"]
    grey_index = [i for i, (p, _) in enumerate(val.samples) if p.endswith(f"val_{ALL_WNIDS[1]}_0.JPEG")][0]
    assert Image.open(val.samples[grey_index][0]).mode == "L"
    tensor, _ = val[grey_index]
    assert tensor.shape == (3, SIZE, SIZE)
    pixels = data.to_display(tensor[None])[0].int()
    assert (pixels[..., 0] - pixels[..., 1]).abs().max() <= 1 and (pixels[..., 0] - pixels[..., 2]).abs().max() <= 1


def test_transforms_follow_the_vmamba_recipe(tree):
    data = module(tree, subset=ALL_WNIDS[:2], image_size=224)
    train = repr(data.datasets["train"].transform)
    assert "RandomResizedCropAndInterpolation(size=(224, 224), scale=(0.08, 1.0)" in train
    assert "interpolation=bicubic" in train and "RandomHorizontalFlip(p=0.5)" in train
    rand_augment = [t for t in data.datasets["train"].transform.transforms if isinstance(t, RandAugment)]
    assert len(rand_augment) == 1 and rand_augment[0].num_layers == 2  # rand-m9-mstd0.5-inc1
    assert {(op.magnitude, op.magnitude_std) for op in rand_augment[0].ops} == {(9, 0.5)}
    assert "SolarizeIncreasing" in {op.name for op in rand_augment[0].ops}  # the inc1 op set
    assert "RandomErasing(p=0.25, mode=pixel" in train
    assert "ColorJitter" not in train  # timm drops colour jitter while RandAugment is on, as in VMamba's runs
    evaluation = repr(data.datasets["val"].transform)
    assert "Resize(size=256, interpolation=bicubic" in evaluation and "CenterCrop(size=(224, 224))" in evaluation
    # Scaled to the configured size: 32 / 0.875 -> 36, then a 32 px centre crop.
    small = repr(module(tree, subset=ALL_WNIDS[:2]).datasets["test"].transform)
    assert "Resize(size=36," in small and "CenterCrop(size=(32, 32))" in small
    with pytest.raises(DataConfigError, match="not accepted by timm.data.create_transform"):
        module(tree, subset=ALL_WNIDS[:2], train_transform={"rand_aug": "x"})


def test_probe_batch_fixed_and_spread(tree):
    data = module(tree, subset=ALL_WNIDS[:3])
    images, labels = data.probe_batch(5)
    assert images.shape == (5, 3, SIZE, SIZE) and labels.tolist() == [0, 1, 2, 0, 1]
    again, _ = data.probe_batch(5)
    assert torch.equal(images, again)
    shown = data.to_display(images).float().mean(dim=(1, 2, 3))
    assert [wnid_of_colour(v.item()) for v in shown] == [data.class_names[i] for i in labels]


def test_describe_is_json_friendly(tree):
    info = json.loads(json.dumps(module(tree, subset="imagenette", max_train_per_class=2).describe()))
    assert info["name"] == "imagenet_subset" and info["root"] == str(tree)
    assert info["counts"] == {"train": 20, "val": 20, "test": 20}
    assert info["class_descriptions"][0] == "tench, Tinca tinca"
    assert info["mean"] == pytest.approx([0.485, 0.456, 0.406]) and info["images_verified"] is True


# --- errors --------------------------------------------------------------------------------------------------
def test_root_errors(tmp_path):
    with pytest.raises(DataConfigError, match="data.root is not set.*IMAGENET_ROOT"):
        ImageNetSubsetDataModule(root=None)
    with pytest.raises(DataConfigError, match="does not exist or is not a folder"):
        module(tmp_path / "nowhere")
    (tmp_path / "val").mkdir()
    with pytest.raises(DataConfigError, match=r"missing .*train: data.root must hold train/<wnid>"):
        module(tmp_path)
    (tmp_path / "val").rmdir()
    (tmp_path / "train").mkdir()
    with pytest.raises(DataConfigError, match=r"missing .*val"):
        module(tmp_path)


def test_missing_class_folders_are_all_listed(tmp_path):
    root = make_tree(tmp_path, train_classes=ALL_WNIDS[:2], val_classes=ALL_WNIDS[:2])
    with pytest.raises(DataConfigError, match=rf"2 of the 4 chosen classes have no folder in .*train: {ALL_WNIDS[2]}, {ALL_WNIDS[3]}"):
        module(root, subset=ALL_WNIDS[:4])
    (root / "train" / ALL_WNIDS[2]).mkdir()
    save_image(root / "train" / ALL_WNIDS[2] / "a.JPEG", ALL_WNIDS[2])
    with pytest.raises(DataConfigError, match=rf"1 of the 3 chosen classes have no folder in .*val: {ALL_WNIDS[2]}\. Check data.root"):
        module(root, subset=ALL_WNIDS[:3])


def test_empty_class_folder(tmp_path):
    root = make_tree(tmp_path, train_classes=ALL_WNIDS[:2], val_classes=ALL_WNIDS[:2])
    for image in (root / "train" / ALL_WNIDS[1]).iterdir():
        image.unlink()
    (root / "train" / ALL_WNIDS[1] / "notes.txt").write_text("not an image")
    with pytest.raises(DataConfigError, match=rf"class folder .*{ALL_WNIDS[1]} has no images"):
        module(root, subset=ALL_WNIDS[:2]).setup()


def make_corrupt_tree(tmp_path) -> tuple[Path, list[Path]]:
    root = make_tree(tmp_path, train_classes=ALL_WNIDS[:2], val_classes=ALL_WNIDS[:2])
    truncated = root / "train" / ALL_WNIDS[0] / f"{ALL_WNIDS[0]}_1.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:200])
    junk = root / "val" / ALL_WNIDS[1] / "junk.JPEG"
    junk.write_bytes(b"this is not a jpeg")
    return root, [truncated, junk]


def test_corrupt_images_are_named_at_setup(tmp_path):
    root, bad = make_corrupt_tree(tmp_path)
    with pytest.raises(CorruptImageError) as error:
        module(root, subset=ALL_WNIDS[:2]).setup()
    message = str(error.value)
    assert message.startswith("2 of 11 images cannot be decoded")  # 2 classes x (3 train + 2 val) + junk
    assert all(str(path) in message for path in bad)


def test_lazy_check_names_the_file_when_loaded(tmp_path):
    root, (truncated, _) = make_corrupt_tree(tmp_path)
    data = module(root, subset=ALL_WNIDS[:2], verify_images="lazy")
    data.setup()
    index = [i for i, (p, _) in enumerate(data.datasets["train"].samples) if p == str(truncated)][0]
    with pytest.raises(CorruptImageError, match=rf"cannot decode image {truncated} \(OSError"):
        data.datasets["train"][index]
    # auto switches to lazy above verify_limit
    auto = module(root, subset=ALL_WNIDS[:2], verify_limit=5)
    auto.setup()
    assert auto.describe()["images_verified"] is False


def test_bad_verify_and_holdout_settings(tree):
    with pytest.raises(DataConfigError, match="verify_images='sometimes'"):
        module(tree, subset=ALL_WNIDS[:2], verify_images="sometimes")
    with pytest.raises(DataConfigError, match="holdout_fraction=1.0"):
        module(tree, subset=ALL_WNIDS[:2], holdout_fraction=1.0)
    with pytest.raises(DataConfigError, match="cannot hold out"):
        module(tree, subset=ALL_WNIDS[:2], holdout_fraction=0.01).setup()


# --- image modes ------------------------------------------------------------------------------------------------
def test_image_modes_are_converted_to_the_right_rgb(tmp_path):
    from patchorder.data.image_files import open_rgb

    half = Image.new("RGBA", (4, 4), (200, 0, 0, 0))  # fully transparent: white, not red
    half.putpixel((0, 0), (200, 0, 0, 255))
    half.save(tmp_path / "rgba.png")
    rgb = np.asarray(open_rgb(str(tmp_path / "rgba.png")))
    assert rgb[0, 0].tolist() == [200, 0, 0] and rgb[1, 1].tolist() == [255, 255, 255]
    # 16-bit grayscale: 32768 of 65535 is mid grey (PIL's own convert clips it to 255)
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert np.asarray(open_rgb(str(tmp_path / "gray16.png")))[0, 0].tolist() == [127, 127, 127]
    # CMYK JPEG of pure cyan decodes to (0, 255, 255), within JPEG rounding
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    cyan = np.asarray(open_rgb(str(tmp_path / "cmyk.jpg"))).astype(int)[4, 4]
    assert np.abs(cyan - [0, 255, 255]).max() <= 3
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(CorruptImageError, match=r"float.tiff has mode F"):
        open_rgb(str(tmp_path / "float.tiff"))


def test_only_decode_errors_count_as_corrupt(tmp_path, monkeypatch):
    from patchorder.data import image_files

    save_image(tmp_path / "fine.png", ALL_WNIDS[0])

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no memory")

    monkeypatch.setattr(image_files, "to_rgb", out_of_memory)
    with pytest.raises(MemoryError):
        image_files.open_rgb(str(tmp_path / "fine.png"))


def test_a_resume_first_checks_the_image_that_stopped_the_run(tmp_path):
    from patchorder.training.results import write_results
    from patchorder.training.run import check_corrupt_images_fixed

    root, (truncated, _) = make_corrupt_tree(tmp_path)
    data = module(root, subset=ALL_WNIDS[:2], verify_images="lazy")
    data.setup()
    index = [i for i, (p, _) in enumerate(data.datasets["train"].samples) if p == str(truncated)][0]
    with pytest.raises(CorruptImageError) as stopped:
        data.datasets["train"][index]
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    write_results(run_dir, {"status": "failed", "error": f"CorruptImageError: {stopped.value}"})
    with pytest.raises(CorruptImageError, match=rf"still cannot be decoded: {truncated}\. Replace or delete"):
        check_corrupt_images_fixed(str(run_dir / "checkpoints" / "last.ckpt"))
    save_image(truncated, ALL_WNIDS[0])  # the user replaced it
    check_corrupt_images_fixed(str(run_dir / "checkpoints" / "last.ckpt"))
