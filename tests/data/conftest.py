"""Fabricates tiny dataset trees in each published ReID folder layout for the loader tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Iterable

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path) -> None:
    """A real 8x4 image (the loaders do not decode, but the files should look like a dataset's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 8), (120, 60, 30)).save(path)


def write_images(folder: Path, names: Iterable[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_image(folder / name)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# -- Market-1501 / DukeMTMC-reID ---------------------------------------------------------------------------------

MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c1s1_000101_01.jpg", "0007_c3s2_000201_02.jpg",
        "-1_c1s1_000401_03.jpg", "0000_c4s1_000001_01.jpg",  # junk and distractor: dropped from train
    ],
    "query": ["0010_c1s1_001051_00.jpg", "0011_c2s1_001101_00.jpg", "-1_c2s1_000001_00.jpg"],
    "bounding_box_test": [
        "0010_c2s1_001201_01.jpg", "0011_c1s1_001301_01.jpg", "0011_c6s1_001401_01.jpg",
        "0000_c1s1_000000_01.jpg",  # distractor: kept in the gallery
        "-1_c1s1_000001_01.jpg",  # junk: dropped
    ],
}

DUKE_FILES = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0003_c1_f0044158.jpg"],
    "query": ["0005_c2_f0046985.jpg", "0008_c8_f0076111.jpg"],
    "bounding_box_test": ["0005_c5_f0051781.jpg", "0008_c7_f0098431.jpg", "0008_c1_f0047802.jpg"],
}


def build_market(root: Path, release_subfolder: bool = True) -> Path:
    base = root / "market1501" / ("Market-1501-v15.09.15" if release_subfolder else "")
    for folder, names in MARKET_FILES.items():
        write_images(base / folder, names)
        (base / folder / "Thumbs.db").write_bytes(b"")  # shipped with the archive; must be ignored
    return base


def build_duke(root: Path) -> Path:
    for folder, names in DUKE_FILES.items():
        write_images(root / "DukeMTMC-reID" / folder, names)
    return root / "DukeMTMC-reID"


# -- MSMT17 -----------------------------------------------------------------------------------------------------

MSMT_LISTS = {
    "list_train.txt": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_03_0303morning_0016_0.jpg 0",
                       "0001/0001_000_02_0303noon_0101_1.jpg 1"],
    "list_val.txt": ["0000/0000_002_05_0303afternoon_0200_0.jpg 0"],
    "list_query.txt": ["0000/0000_000_07_0303noon_0001_0.jpg 0", "0001/0001_000_09_0303noon_0002_0.jpg 1"],
    "list_gallery.txt": ["0000/0000_001_08_0303noon_0003_0.jpg 0", "0001/0001_001_15_0304noon_0004_0.jpg 1",
                         "0001/0001_002_10_0304noon_0005_0.jpg 1"],
}


def build_msmt17(root: Path, version: str = "V1") -> Path:
    release = root / "MSMT17" / f"MSMT17_{version}"
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    for list_name, lines in MSMT_LISTS.items():
        write_lines(release / list_name, lines)
        folder = train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir
        for line in lines:
            write_image(release / folder / line.split()[0])
    return release


# -- CUHK03 (MATLAB v7.3 release + new-protocol split files) -------------------------------------------------

# (campair, pid) -> indices (0-9) of the non-empty cells; 0-4 are view 1, 5-9 view 2.
CUHK03_CELLS = {(1, 1): [0, 1, 5], (1, 2): [0, 5], (2, 1): [0, 1, 5, 6]}
CUHK03_LABELS = {(1, 1): 1, (1, 2): 2, (2, 1): 3}
CUHK03_QUERY = ["1_002_1_01.png", "2_001_1_01.png"]


def cuhk03_pixels(campair: int, pid: int, cell: int, labeled: bool) -> np.ndarray:
    """An 8x4 RGB image (H, W, 3) whose values reveal any transposition mistake."""
    h, w, c = np.meshgrid(np.arange(8), np.arange(4), np.arange(3), indexing="ij")
    return (h * 16 + w * 4 + c + campair * 7 + pid * 3 + cell + 100 * labeled).astype(np.uint8)


def cuhk03_names() -> list:
    return sorted(
        f"{campair}_{pid:03d}_{1 if cell < 5 else 2}_{cell + 1:02d}.png"
        for (campair, pid), cells in CUHK03_CELLS.items()
        for cell in cells
    )


def _write_mat73(path: Path) -> None:
    """A miniature cuhk-03.mat as MATLAB v7.3 writes it: HDF5 with a 512-byte header, cells as object
    references into '#refs#', every array stored transposed (column-major)."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as mat:
        refs = mat.create_group("#refs#")
        counter = iter(range(10_000))

        def stored(data: np.ndarray, matlab_class: str, empty: bool = False):
            dataset = refs.create_dataset(f"r{next(counter)}", data=data)
            dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class)
            if empty:
                dataset.attrs["MATLAB_empty"] = np.uint8(1)
            return dataset.ref

        for image_type in ("detected", "labeled"):
            pair_refs = []
            for campair in (1, 2):
                pids = sorted(pid for (pair, pid) in CUHK03_CELLS if pair == campair)
                cells = np.empty((len(pids), 10), dtype=h5py.ref_dtype)
                for row, pid in enumerate(pids):
                    for cell in range(10):
                        if cell in CUHK03_CELLS[(campair, pid)]:
                            image = cuhk03_pixels(campair, pid, cell, image_type == "labeled")
                            cells[row, cell] = stored(image.T, "uint8")
                        else:
                            cells[row, cell] = stored(np.zeros(2, dtype=np.uint64), "double", empty=True)
                pair_refs.append(stored(cells.T, "cell"))
            top = mat.create_dataset(image_type, data=np.array([pair_refs], dtype=h5py.ref_dtype))  # 1 x pairs
            top.attrs["MATLAB_class"] = np.bytes_("cell")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2018 HDF5 schema 1.00 ."
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def _write_protocol(path: Path) -> None:
    from scipy.io import savemat

    names = cuhk03_names()
    labels = [CUHK03_LABELS[(int(n.split("_")[0]), int(n.split("_")[1]))] for n in names]
    train = [i + 1 for i, label in enumerate(labels) if label == 1]
    query = [names.index(n) + 1 for n in CUHK03_QUERY]
    gallery = [i + 1 for i, label in enumerate(labels) if label != 1 and names[i] not in CUHK03_QUERY]
    filelist = np.empty((len(names), 1), dtype=object)
    filelist[:, 0] = names
    column = lambda values: np.array(values, dtype=float).reshape(-1, 1)  # noqa: E731
    savemat(str(path), {
        "filelist": filelist, "labels": column(labels), "camId": column([int(n.split("_")[2]) for n in names]),
        "train_idx": column(train), "query_idx": column(query), "gallery_idx": column(gallery),
    })


def build_cuhk03(root: Path) -> Path:
    base = root / "cuhk03"
    (base / "cuhk03_release").mkdir(parents=True)
    _write_mat73(base / "cuhk03_release" / "cuhk-03.mat")
    for image_type in ("detected", "labeled"):
        _write_protocol(base / f"cuhk03_new_protocol_config_{image_type}.mat")
    return base


# -- VeRi-776 ---------------------------------------------------------------------------------------------------

VERI_FILES = {
    "image_train": ["0001_c001_00016450_0.jpg", "0001_c002_00016460_0.jpg", "0002_c003_00016470_0.jpg"],
    "image_query": ["0005_c001_00020000_0.jpg", "0006_c004_00020010_0.jpg"],
    "image_test": ["0005_c002_00020100_0.jpg", "0006_c005_00020110_0.jpg", "0006_c020_00020120_0.jpg"],
}


def build_veri(root: Path) -> Path:
    for folder, names in VERI_FILES.items():
        write_images(root / "veri" / folder, names)
    return root / "veri"


# -- VehicleID --------------------------------------------------------------------------------------------------

VEHICLEID_TRAIN = ["00001 1", "00002 1", "00003 2", "00004 3"]
VEHICLEID_TEST_VIDS = {800: 6, 1600: 7, 2400: 8}  # vehicles per test list, 5 images each
VEHICLEID_IMAGES_PER_VID = 5


def vehicleid_test_lines(size: int) -> list:
    lines = []
    for vid in range(100, 100 + VEHICLEID_TEST_VIDS[size]):
        lines += [f"{vid * 10 + k:07d} {vid}" for k in range(VEHICLEID_IMAGES_PER_VID)]
    return lines


def build_vehicleid(root: Path) -> Path:
    base = root / "vehicleid"
    (base / "image").mkdir(parents=True)  # the loader does not open images; the list files are the truth
    split = base / "train_test_split"
    write_lines(split / "train_list.txt", VEHICLEID_TRAIN)
    for size in VEHICLEID_TEST_VIDS:
        write_lines(split / f"test_list_{size}.txt", vehicleid_test_lines(size))
    return base


# -- VeRi-Wild --------------------------------------------------------------------------------------------------

VERIWILD_TRAIN = ["00001/000001", "00001/000002", "00002/000003"]
VERIWILD_TEST = {  # size -> (query lines, gallery lines)
    3000: (["00010/000100"], ["00010/000101", "00010/000102"]),
    5000: (["00010/000100", "00011/000110"], ["00010/000101", "00011/000111"]),
    10000: (["00010/000100", "00011/000110", "00012/000120"], ["00010/000101", "00011/000111", "00012/000121"]),
}
VERIWILD_CAMERAS = {"000001": 16, "000002": 3, "000003": 16, "000100": 1, "000101": 2, "000102": 174,
                    "000110": 5, "000111": 6, "000120": 7, "000121": 8}


def build_veriwild(root: Path) -> Path:
    base = root / "VERI-Wild"
    split = base / "train_test_split"
    vid_of = {}
    for line in VERIWILD_TRAIN + [l for q, g in VERIWILD_TEST.values() for l in q + g]:  # noqa: E741
        vid, image_id = line.split("/")
        vid_of[image_id] = vid
        write_image(base / "images" / vid / f"{image_id}.jpg")
    info = ["id/image;Camera ID;Time;Model;Type;Color"] + [
        f"{vid_of[i]}/{i};{cam};2018-03-11 12:39:08;Audi A4L;sedan;black" for i, cam in VERIWILD_CAMERAS.items()
    ]
    write_lines(split / "vehicle_info.txt", info)
    write_lines(split / "train_list.txt", VERIWILD_TRAIN)
    for size, (query, gallery) in VERIWILD_TEST.items():
        write_lines(split / f"test_{size}_query.txt", query)
        write_lines(split / f"test_{size}.txt", gallery)
    return base


BUILDERS: Dict[str, Callable[..., Path]] = {
    "market": build_market,
    "duke": build_duke,
    "msmt17_v1": lambda root, **kwargs: build_msmt17(root, "V1", **kwargs),
    "msmt17_v2": lambda root, **kwargs: build_msmt17(root, "V2", **kwargs),
    "cuhk03": build_cuhk03,
    "veri": build_veri,
    "vehicleid": build_vehicleid,
    "veriwild": build_veriwild,
}


@pytest.fixture
def fake_layout(tmp_path: Path) -> Callable[[str], Path]:
    """``fake_layout(family, **options)`` builds that family's tree under a fresh datasets root; returns the root."""
    counter = iter(range(100))

    def build(family: str, **options) -> Path:
        root = tmp_path / f"datasets{next(counter)}"
        root.mkdir()
        BUILDERS[family](root, **options)
        return root

    return build


@pytest.fixture
def cuhk03_truth() -> SimpleNamespace:
    """What the fabricated cuhk-03.mat holds: non-empty cells per (campair, pid), file names, pixel generator."""
    return SimpleNamespace(cells=CUHK03_CELLS, names=cuhk03_names(), pixels=cuhk03_pixels)
