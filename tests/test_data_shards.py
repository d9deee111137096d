"""webdataset tar shards (`wds:DIR`, `wds:PATTERN`): indexed members read like image files, and bad shards."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image
from sklearn.datasets import load_digits

from edgekit.data import DatasetError, load_dataset
from edgekit.data.sources import TarMember
from edgekit.recipe.plan import Fingerprints
from tests.conftest import assert_user_error, run_cli

N_TRAIN, N_VAL, PER_SHARD = 300, 60, 100
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def jpeg(pixels) -> bytes:
    """An 8x8 digit (0..16) as a 24x24 greyscale JPEG."""
    img = Image.fromarray((pixels * 255 / 16).round().astype("uint8"), "L").resize((24, 24), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_shards(pattern: str, samples: list[tuple[str, bytes, int]], maxcount: int = PER_SHARD) -> None:
    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0) as sink:
        for key, data, label in samples:
            sink.write({"__key__": key, "jpg": data, "cls": label})


@pytest.fixture(scope="module")
def samples() -> dict[str, list[tuple[str, bytes, int]]]:
    d = load_digits()
    items = [(f"s{i:05d}", jpeg(d.images[i]), int(d.target[i])) for i in range(N_TRAIN + N_VAL)]
    return {"train": items[:N_TRAIN], "val": items[N_TRAIN:]}


@pytest.fixture(scope="module")
def shards(tmp_path_factory, samples) -> Path:
    """DIR/train-00000{0,1,2}.tar, DIR/val-000000.tar and DIR/classes.txt."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(str(root / "train-%06d.tar"), samples["train"])
    write_shards(str(root / "val-%06d.tar"), samples["val"])
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory, samples) -> Path:
    """The same JPEG bytes as an image folder: DIR/{train,val}/<label>/<key>.jpg."""
    root = tmp_path_factory.mktemp("folder")
    for split, items in samples.items():
        for key, data, label in items:
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            (root / split / str(label) / f"{key}.jpg").write_bytes(data)
    return root


def test_shards_load_the_same_pixels_as_an_image_folder(shards, folder, samples):
    d = load_dataset(f"wds:{shards}", 32)
    assert (len(d.train), len(d.val)) == (N_TRAIN, N_VAL)
    assert d.classes == NAMES
    assert d.train.y.tolist() == [label for _, _, label in samples["train"]]  # in the shards' order
    assert d.val.y.tolist() == [label for _, _, label in samples["val"]]
    assert d.describe()["shards"] == {"train": 3, "val": 1}
    assert sorted({m.shard for m in d.train.images}) == [str(shards / f"train-{i:06d}.tar") for i in range(3)]

    ref = load_dataset(f"imagefolder:{folder}", 32)
    for split, ref_split in ((d.train, ref.train), (d.val, ref.val)):
        where = {Path(p).stem: i for i, p in enumerate(ref_split.images)}  # the folder sorts by class, then key
        order = [where[m.name.split(".")[0]] for m in split.images]
        idx = list(range(0, len(split), 7))
        x, y = split.batch(idx)
        x_ref, y_ref = ref_split.batch([order[i] for i in idx])
        assert x.shape == (len(idx), 3, 32, 32)
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
        assert x.std() > 0.1  # real images, not blanks


def test_shards_without_val_shards_split_a_seeded_fraction(tmp_path, samples):
    write_shards(str(tmp_path / "part-%03d.tar"), samples["train"], maxcount=150)
    a = load_dataset(f"wds:{tmp_path}", 16, seed=3)
    b = load_dataset(f"wds:{tmp_path}", 16, seed=3)
    assert (len(a.train), len(a.val)) == (240, 60)
    assert a.classes == tuple(str(i) for i in range(10))  # no classes.txt: the labels' numbers
    assert [str(m) for m in a.val.images] == [str(m) for m in b.val.images] and torch.equal(a.val.y, b.val.y)
    c = load_dataset(f"wds:{tmp_path}", 16, seed=4)
    assert [str(m) for m in a.val.images] != [str(m) for m in c.val.images]
    labels = {key: label for key, _, label in samples["train"]}
    assert all(labels[m.name.split(".")[0]] == int(y) for m, y in zip(a.train.images, a.train.y, strict=True))


def test_a_brace_pattern_names_the_shards(shards):
    d = load_dataset(f"wds:{shards}/train-{{000000..000001}}.tar", 32)
    assert len(d.train) + len(d.val) == 2 * PER_SHARD and len(d.val) == 40
    assert d.classes == NAMES  # classes.txt beside the shards
    assert {m.shard[-10:] for m in d.train.images} == {"000000.tar", "000001.tar"}
    with pytest.raises(DatasetError, match=r"shard '.*train-000003\.tar' of '.*' does not exist \(2 of 5 missing\)"):
        load_dataset(f"wds:{shards}/train-{{000000..000004}}.tar", 32)
    with pytest.raises(DatasetError, match=r"no shards matched '.*/train-\{000007\.\.000009\}\.tar'"):
        load_dataset(f"wds:{shards}/train-{{000007..000009}}.tar", 32)


def test_a_tar_member_pickles_and_reads_its_own_bytes(shards, samples):
    d = load_dataset(f"wds:{shards}", 32)
    member = d.train.images[123]
    assert isinstance(member, TarMember)
    assert str(member) == f"{shards / 'train-000001.tar'}:s00123.jpg"
    copy = pickle.loads(pickle.dumps(member))
    assert copy == member
    key, data, _ = samples["train"][123]
    assert copy.open("rb").read() == data
    with tarfile.open(member.shard) as tar:  # the same bytes tarfile extracts
        f = tar.extractfile(f"{key}.jpg")
        assert f is not None and f.read() == data
    # a list of members shares its shard strings: a worker receives about 40 bytes per image
    assert len(pickle.dumps(d.train.images)) < 60 * len(d.train)


def bad_shard(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_members_are_found_in_every_tar_format(tmp_path, samples, fmt):
    """Long names (a ustar prefix, a GNU long-name member, a pax path), keys in sub-directories with dots in their
    names, a directory and a link among the files: each image is found at the bytes tarfile extracts."""
    deep = "/".join(["a.directory-name-long-enough"] * 4)  # 115 characters: past the 100 of a header's name field
    items = samples["train"][:6]
    with tarfile.open(tmp_path / "train-0.tar", "w", format=fmt) as tar:
        tar.addfile(_dir(deep))
        for i, (key, data, label) in enumerate(items):
            for name, payload in ((f"{deep}/{key}.jpg", data), (f"{deep}/{key}.cls", str(label).encode())):
                info = tarfile.TarInfo(name if i % 2 else name.replace(deep + "/", f"d{i}/"))
                info.size, info.mtime = len(payload), 1.5e9 + 0.25  # a fractional time: pax writes a header for it
                tar.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, f"d0/{items[0][0]}.jpg"
        tar.addfile(link)
    d = load_dataset(f"wds:{tmp_path}", 32, val_fraction=0.2)
    found = sorted([*d.train.images, *d.val.images], key=lambda m: m.offset)
    assert [m.name.rsplit("/", 1)[1] for m in found] == [f"{key}.jpg" for key, _, _ in items]
    with tarfile.open(tmp_path / "train-0.tar") as tar:
        for m in found:
            f = tar.extractfile(m.name)
            assert f is not None and m.open().read() == f.read()
            assert tar.getmember(m.name).offset_data == m.offset
    labels = {key: label for key, _, label in items}
    for split in (d.train, d.val):
        assert [labels[m.name.rsplit("/", 1)[1].split(".")[0]] for m in split.images] == split.y.tolist()


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


@pytest.mark.parametrize(
    "case, needle",
    [
        ("empty", r"no shards matched '{tmp}/train-\*\.tar' or '{tmp}/\*\.tar'"),
        ("no-label", r"sample 'b' in shard '{tmp}/train-0\.tar' has no label \(a 'b\.cls' member\)"),
        ("no-image", r"sample 'b' in shard '{tmp}/train-0\.tar' has no image \(looked for \..*jpg"),
        ("bad-label", r"label 'b\.cls' in shard '{tmp}/train-0\.tar' holds b'cat', not an integer"),
        ("corrupt", r"cannot read shard '{tmp}/train-1\.tar' as a tar file \(no tar header\)"),
        ("gzip", r"cannot read shard '{tmp}/train-1\.tar' as a tar file \(it is gzip-compressed; give uncompressed"),
        ("truncated", r"shard '{tmp}/train-0\.tar' as a tar file \(it is truncated: 'b\.jpg' ends past the end"),
        ("label-range", r"'wds:{tmp}' has a label 3, but labels must be 0 to 1, one per line of '{tmp}/classes\.txt'"),
    ],
)
def test_bad_shards_are_one_line_errors(tmp_path, samples, case, needle):
    (_, data, _) = samples["train"][0]
    members = {"a.jpg": data, "a.cls": b"0", "b.jpg": data, "b.cls": b"1", "c.jpg": data, "c.cls": b"1"}
    if case == "no-label":
        del members["b.cls"]
    elif case == "no-image":
        del members["b.jpg"]
    elif case == "bad-label":
        members["b.cls"] = b"cat"
    elif case == "label-range":
        members["b.cls"] = b"3"
        (tmp_path / "classes.txt").write_text("left\nright\n")
    if case != "empty":
        bad_shard(tmp_path / "train-0.tar", members)
    if case == "corrupt":
        (tmp_path / "train-1.tar").write_bytes(b"this is not a tar file " * 40)
    elif case == "gzip":
        (tmp_path / "train-1.tar").write_bytes(gzip.compress((tmp_path / "train-0.tar").read_bytes()))
    elif case == "truncated":
        raw = (tmp_path / "train-0.tar").read_bytes()
        cut = raw.index(b"b.jpg") + 512 + 10  # ten bytes into b.jpg's data
        (tmp_path / "train-0.tar").write_bytes(raw[:cut])
    with pytest.raises(DatasetError, match=needle.format(tmp=tmp_path)) as e:
        load_dataset(f"wds:{tmp_path}", 32)
    assert "\n" not in str(e.value)


def test_remote_shards_are_refused_with_what_to_do():
    for spec in ("wds:https://example.org/train-{000000..000009}.tar", "wds:pipe:curl -s http://x/train-0.tar"):
        with pytest.raises(DatasetError, match=r"reads shards on a local or mounted filesystem, not '(https|pipe):"):
            load_dataset(spec, 32)


def test_the_fingerprint_is_the_shards_sizes_and_times(tmp_path, samples):
    write_shards(str(tmp_path / "train-%06d.tar"), samples["train"], maxcount=200)
    first = Fingerprints().data(f"wds:{tmp_path}")
    shard = tmp_path / "train-000001.tar"
    assert first["train"][1] == [str(shard), shard.stat().st_size, shard.stat().st_mtime_ns]
    assert first["val"] == [] and first["classes"] is None
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert Fingerprints().data(f"wds:{tmp_path}") != first


def test_the_cli_trains_on_shards(shards, tmp_path):
    proc = run_cli("train", "--help")
    assert proc.returncode == 0 and "wds:DIR|PATTERN" in proc.stdout
    out = tmp_path / "m.pt"
    proc = run_cli(
        "train", "mobilenetv2_100", "--data", f"wds:{shards}", "--epochs", "1", "--input-size", "32",
        "--num-classes", "10", "--limit", "64", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert out.is_file()
    proc = run_cli("train", "mobilenetv2_100", "--data", f"wds:{tmp_path}/none-{{0..3}}.tar", "--out", str(out))
    assert_user_error(proc, f"no shards matched '{tmp_path}/none-{{0..3}}.tar'")
