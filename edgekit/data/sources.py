"""Dataset sources: one plug-in per kind of dataset spec (`name[:ARG]`), and the registry that every command reads.

A source loads its images and labels (`load`) and says what a recipe's cache key records of its data
(`fingerprint`: the files' contents, or a listing where hashing every image would take minutes). `load_dataset`,
the CLI's help, the recipe schema and the recipe cache all derive from this registry.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import posixpath
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, ClassVar

import torch
from braceexpand import braceexpand
from sklearn.datasets import load_digits

from ..io import package_version
from .splits import DatasetError, Preprocess, Split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}

FileHash = Callable[[Path], str]


class Source:
    """A kind of dataset. Subclasses set `name` and `usage` and implement `load` and `fingerprint`."""

    name: ClassVar[str] = ""
    usage: ClassVar[str] = ""  # how a spec names it, e.g. "fashion-mnist[:DIR]"
    arg: ClassVar[str] = "none"  # its argument after the colon: none, optional or required

    def accepts(self, arg: str) -> bool:
        return {"none": not arg, "optional": True, "required": bool(arg)}[self.arg]

    def load(self, arg: str, pre: Preprocess, val_fraction: float, seed: int) -> tuple[Split, Split, tuple, dict]:
        """(train, val, classes, info): the splits (val: the source's own, else a seeded fraction of train)."""
        raise NotImplementedError

    def fingerprint(self, arg: str, file_hash: FileHash) -> dict:
        """What identifies the data for a recipe's cache key; a DatasetError where the data is missing."""
        raise NotImplementedError


_SOURCES: dict[str, Source] = {}


def register_source(cls: type[Source]) -> type[Source]:
    """Class decorator: register an instance of a Source subclass under its `name` (a later one replaces it)."""
    if not (isinstance(cls, type) and issubclass(cls, Source)) or not cls.name or not cls.usage:
        raise TypeError(f"{cls!r} is not a Source subclass with a name and a usage")
    _SOURCES[cls.name] = cls()
    return cls


def unregister_source(name: str) -> None:
    _SOURCES.pop(name, None)


def source_usages() -> tuple[str, ...]:
    return tuple(s.usage for s in _SOURCES.values())


def data_help() -> str:
    """`digits, fashion-mnist[:DIR] or imagefolder:DIR`: the help text of every option that takes a dataset."""
    u = source_usages()
    return f"{', '.join(u[:-1])} or {u[-1]}" if len(u) > 1 else "".join(u)


def find_source(spec: str) -> tuple[Source, str]:
    """The source a spec names and its argument; else a DatasetError listing the registered ones."""
    kind, _, arg = str(spec).partition(":")
    source = _SOURCES.get(kind)
    if source is None or not source.accepts(arg):
        raise DatasetError(f"unknown dataset '{spec}'; use one of: {', '.join(source_usages())}")
    return source, arg


def _seeded_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def listing_hash(root: Path) -> str:
    """sha256 of the names, sizes and modification times of the files under `root`."""
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# -- the built-in sources --------------------------------------------------------------------------------------------


def _digits():
    d = load_digits()
    x = (torch.tensor(d.images, dtype=torch.float32) * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    return x, torch.tensor(d.target, dtype=torch.long), tuple(str(i) for i in range(10))


@register_source
class Digits(Source):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes)."""

    name = "digits"
    usage = "digits"

    def load(self, arg, pre, val_fraction, seed):
        x, y, classes = _digits()
        tr, va = _seeded_split(len(y), val_fraction, seed)
        return Split(x[tr], y[tr], pre), Split(x[va], y[va], pre), classes, {}

    def fingerprint(self, arg, file_hash):
        return {"digits": package_version("scikit-learn")}


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (the MNIST format), plain or gzip-compressed, as a uint8 tensor."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"cannot read IDX file '{path}' ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"'{path}' is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = 1
    for d in dims:
        count *= d
    if len(raw) - header != count:
        raise DatasetError(f"'{path}' is truncated: header says {dims}, holds {len(raw) - header} of {count} bytes")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).view(*dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"Fashion-MNIST file '{stem}[.gz]' not found in {root}; install the Debian package "
        "(apt-get install dataset-fashion-mnist) or give fashion-mnist:DIR with the four IDX files"
    )


def _fashion_mnist(root: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], tuple[str, ...]]:
    if not root.is_dir():
        raise DatasetError(
            f"Fashion-MNIST directory {root} does not exist; install it with `apt-get install "
            "dataset-fashion-mnist` or give fashion-mnist:DIR with the four IDX files"
        )
    parts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, prefix in (("train", "train"), ("val", "t10k")):
        x = read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"))
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise DatasetError(
                f"Fashion-MNIST {split} files in {root} disagree: images {tuple(x.shape)}, labels {tuple(y.shape)}"
            )
        if len(y) and int(y.max()) >= len(FASHION_MNIST_CLASSES):  # uint8: never below 0
            bad = int((y >= len(FASHION_MNIST_CLASSES)).nonzero()[0, 0])
            raise DatasetError(
                f"Fashion-MNIST {split} labels in {root} hold {int(y[bad])} (at index {bad}); labels must be "
                f"0 to {len(FASHION_MNIST_CLASSES) - 1}, one per class: replace the labels file"
            )
        parts[split] = (x.unsqueeze(1), y.long())
    return parts, FASHION_MNIST_CLASSES


@register_source
class FashionMNIST(Source):
    """The four IDX files of Fashion-MNIST (plain or .gz); DIR defaults to the Debian package's."""

    name = "fashion-mnist"
    usage = "fashion-mnist[:DIR]"
    arg = "optional"

    def load(self, arg, pre, val_fraction, seed):
        root = Path(arg) if arg else FASHION_MNIST_DIR
        parts, classes = _fashion_mnist(root)
        return Split(*parts["train"], pre), Split(*parts["val"], pre), classes, {"root": str(root)}

    def fingerprint(self, arg, file_hash):
        root = Path(arg) if arg else FASHION_MNIST_DIR
        if not root.is_dir():
            raise DatasetError(f"'{root}' does not exist; install dataset-fashion-mnist or give fashion-mnist:DIR")
        return {"files": {f.name: file_hash(f) for f in sorted(root.iterdir()) if f.is_file()}}


def _list_images(root: Path) -> tuple[list, list, tuple]:
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not classes:
        raise DatasetError(f"'{root}' has no class sub-directories; an image folder is DIR/<class>/<image>")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        paths += [str(p) for p in files]
        labels += [i] * len(files)
    if not paths:
        raise DatasetError(
            f"'{root}' holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))} in its class sub-directories)"
        )
    return paths, labels, classes


@register_source
class ImageFolder(Source):
    """One sub-directory of images per class; DIR/train and DIR/val are the splits when both exist."""

    name = "imagefolder"
    usage = "imagefolder:DIR"
    arg = "required"

    def load(self, arg, pre, val_fraction, seed):
        root = Path(arg)
        if not root.is_dir():
            raise DatasetError(f"image folder '{root}' does not exist; give imagefolder:DIR with DIR/<class>/<image>")
        if (root / "train").is_dir() and (root / "val").is_dir():
            tp, tl, classes = _list_images(root / "train")
            vp, vl, vclasses = _list_images(root / "val")
            if vclasses != classes:
                raise DatasetError(f"'{root}/train' and '{root}/val' have different class sub-directories")
            return Split(tp, torch.tensor(tl), pre), Split(vp, torch.tensor(vl), pre), classes, {"root": str(root)}
        paths, labels, classes = _list_images(root)
        if len(paths) < 3:
            raise DatasetError(
                f"'{root}' holds {len(paths)} image{'s' if len(paths) != 1 else ''}; a train / validation split "
                "needs at least 3 (2 to train on, 1 to validate): add images"
            )
        full = Split(paths, torch.tensor(labels), pre)
        tr, va = _seeded_split(len(paths), val_fraction, seed)
        return full.subset(tr), full.subset(va), classes, {"root": str(root)}

    def fingerprint(self, arg, file_hash):
        root = Path(arg)
        if not root.is_dir():
            raise DatasetError(
                f"image folder '{root}' does not exist; give imagefolder:DIR with DIR/<class>/<image> "
                "(--set data=imagefolder:DIR)"
            )
        return {"listing": listing_hash(root)}  # hashing every image of ImageNet would take minutes


# -- webdataset tar shards ---------------------------------------------------------------------------------------------

WDS_IMAGE_EXTENSIONS = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES) | {"pgm", "pbm", "pnm"}
INDEX_THREADS = 8  # shards indexed at once


@dataclass(frozen=True, slots=True)
class TarMember:
    """One file inside an uncompressed tar shard: `open()` reads exactly its bytes (a seek and a read, no tar
    parsing), so a DataLoader worker reads any sample in any order. Small and picklable (four fields)."""

    shard: str
    offset: int  # of the member's data in the shard
    size: int
    name: str  # the member's name in the tar

    def open(self, mode: str = "rb") -> io.BytesIO:
        if mode != "rb":
            raise ValueError(f"a tar member opens read-only as bytes ('rb'), not '{mode}'")
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"the shard ends {self.size - len(data)} bytes into the member: it is truncated")
        return io.BytesIO(data)

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


def _is_remote(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def _wds_shards(arg: str) -> tuple[list[Path], list[Path], Path]:
    """(train shards, val shards, the directory that may hold classes.txt) that `wds:ARG` names."""
    if _is_remote(arg):
        raise DatasetError(
            f"wds: reads shards on a local or mounted filesystem, not '{arg}': copy the shards there (or mount "
            "their storage) and give wds:DIR or a brace pattern of their paths"
        )
    root = Path(arg)
    if root.is_dir():
        train = sorted(root.glob("train-*.tar"))
        val = sorted(root.glob("val-*.tar"))
        if not train:
            if val:
                raise DatasetError(
                    f"'{root}' holds val-*.tar shards but no train-*.tar: add the training shards (or give "
                    "wds:PATTERN naming the shards to train on)"
                )
            train = sorted(root.glob("*.tar"))
        if not train:
            raise DatasetError(
                f"no shards matched '{root / 'train-*.tar'}' or '{root / '*.tar'}': wds:DIR needs uncompressed "
                "webdataset tar shards in DIR"
            )
        return train, val, root
    paths = list(braceexpand(arg))
    if len(paths) == 1 and not glob.has_magic(arg) and not root.exists():
        raise DatasetError(
            f"'{arg}' does not exist; give wds:DIR (train-*.tar, optionally val-*.tar) or a pattern of the shards "
            "such as wds:/data/train-{000000..000146}.tar"
        )
    shards: list[Path] = []
    missing: list[str] = []
    for p in paths:
        if glob.has_magic(p):
            shards += sorted(Path(m) for m in glob.glob(p) if Path(m).is_file())
        elif Path(p).is_file():
            shards.append(Path(p))
        else:
            missing.append(p)
    if not shards:
        raise DatasetError(f"no shards matched '{arg}': check the directory and the numbers in the pattern")
    if missing:
        raise DatasetError(
            f"shard '{missing[0]}' of '{arg}' does not exist ({len(missing)} of {len(paths)} missing): check the "
            "numbers in the pattern"
        )
    return shards, [], shards[0].parent


def _split_name(name: str) -> tuple[str, str] | None:
    """webdataset's (key, extension) of a member name: the key is the path up to the first dot of its basename."""
    head, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    return posixpath.join(head, stem), ext.lower()


_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_FILE_TYPES = (b"0", b"\0", b"7")  # regular (and contiguous) files
_NEXT_MEMBER_TYPES = (b"x", b"L", b"K")  # a pax header, a GNU long name or link name: of the member that follows


class _TarFormatError(ValueError):
    pass


def _tar_number(field: bytes) -> int:
    """A header's numeric field: octal text, or GNU's base-256 (first bit set) for large values."""
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:
            raise _TarFormatError("a negative number in a header")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise _TarFormatError(f"{text[:12]!r} where a header holds a number") from None


def _checksum_ok(header: bytes) -> bool:
    """The header's checksum: the sum of its bytes, with the checksum field's eight counted as spaces (as unsigned
    bytes, or signed as some old tars summed them)."""
    try:
        stored = _tar_number(header[148:156])
    except _TarFormatError:
        return False
    rest = header[:148] + header[156:]
    return stored == sum(rest) + 8 * 32 or stored == sum(b - 256 if b > 127 else b for b in rest) + 8 * 32


def _pax_records(payload: bytes) -> dict[str, str]:
    """`LENGTH key=value\n` records (a pax extended header's data)."""
    records, pos = {}, 0
    try:
        while pos < len(payload) and payload[pos]:
            space = payload.index(b" ", pos)
            length = int(payload[pos:space])
            key, _, value = payload[space + 1 : pos + length - 1].partition(b"=")
            records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
            pos += length
    except ValueError:
        raise _TarFormatError(f"a malformed pax header near byte {pos}") from None
    return records


def _tar_files(f: BinaryIO, file_size: int) -> Iterator[tuple[str, int, int]]:
    """(name, offset of its data, size) of each regular file of an uncompressed tar (ustar, GNU or pax), from the
    headers alone: one seek and one read per header, over the data. It finds what `tarfile` finds (the tests compare
    them) about five times faster, as tarfile builds a TarInfo object of each header (pax headers included)."""
    offset, long_name = 0, None
    pax: dict[str, str] = {}
    while True:
        f.seek(offset)
        header = f.read(_BLOCK)
        if len(header) < _BLOCK or header == _ZEROS:  # the end-of-archive block, or the end of the file
            return
        if not _checksum_ok(header):
            if offset == 0:
                gz = header[:2] == b"\x1f\x8b"
                raise _TarFormatError("it is gzip-compressed; give uncompressed .tar" if gz else "no tar header")
            raise _TarFormatError(f"a corrupt header at byte {offset}")
        kind = header[156:157]
        size = _tar_number(header[124:136])
        if "size" in pax and kind in _FILE_TYPES:  # pax's size replaces the header's (past 8 GiB)
            if not pax["size"].isdigit():
                raise _TarFormatError(f"a pax size of {pax['size'][:12]!r} at byte {offset}")
            size = int(pax["size"])
        data = offset + _BLOCK
        offset = data + -(-size // _BLOCK) * _BLOCK
        if kind in _NEXT_MEMBER_TYPES:
            if data + size > file_size:
                raise _TarFormatError(f"it is truncated: the header at byte {data - _BLOCK} ends past the file's end")
            f.seek(data)
            payload = f.read(size)
            if kind == b"x":
                pax = _pax_records(payload)
            elif kind == b"L":
                long_name = payload.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue
        if kind in _FILE_TYPES:
            name = pax.get("path") or long_name
            if name is None:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                name = f"{prefix}/{name}" if prefix else name
            if data + size > file_size:
                raise _TarFormatError(f"it is truncated: '{name}' ends past the end of the file")
            if not name.endswith("/"):  # an old-style directory
                yield name, data, size
        if kind != b"g":  # a global pax header leaves the next member's own in place
            pax, long_name = {}, None


def _index_shard(shard: Path) -> tuple[list[TarMember], list[int]]:
    """Each sample's image member and label, in the order of the shard, from the tar's headers (no decoding)."""
    where = str(shard)
    images: dict[str, TarMember] = {}
    labels: dict[str, int] = {}
    order: dict[str, None] = {}
    try:
        with open(where, "rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            if file_size == 0:
                raise _TarFormatError("the file is empty")
            for name, offset, size in _tar_files(f, file_size):
                split = _split_name(name)
                if split is None:
                    continue
                key, ext = split
                if ext == "cls":
                    f.seek(offset)
                    text = f.read(size)
                    try:
                        labels[key] = int(text.decode().strip())
                    except (UnicodeDecodeError, ValueError):
                        raise DatasetError(
                            f"label '{name}' in shard '{where}' holds {text[:20]!r}, not an integer: a .cls member "
                            "is the class index as text"
                        ) from None
                    order.setdefault(key)
                elif ext in WDS_IMAGE_EXTENSIONS:
                    if key in images:
                        raise DatasetError(
                            f"sample '{key}' in shard '{where}' has two images ('{images[key].name}', '{name}'): "
                            "keep one per sample"
                        )
                    images[key] = TarMember(where, offset, size, name)
                    order.setdefault(key)
    except (_TarFormatError, OSError) as e:
        raise DatasetError(f"cannot read shard '{where}' as a tar file ({e}): replace it or remove it") from None
    for key in order:
        if key not in labels:
            raise DatasetError(
                f"sample '{key}' in shard '{where}' has no label (a '{key}.cls' member): every sample needs one"
            )
        if key not in images:
            exts = ", .".join(sorted(WDS_IMAGE_EXTENSIONS))
            raise DatasetError(f"sample '{key}' in shard '{where}' has no image (looked for .{exts}): add one")
    return [images[k] for k in order], [labels[k] for k in order]


def _index_shards(shards: list[Path]) -> tuple[list[TarMember], torch.Tensor]:
    """The shards' samples in order. Several shards are read at once: on network storage each header read waits on
    the network (the parsing is a small part), and a read releases the GIL. The first bad shard in order raises."""
    members: list[TarMember] = []
    labels: list[int] = []
    with ThreadPoolExecutor(max_workers=min(INDEX_THREADS, len(shards))) as pool:
        for m, y in pool.map(_index_shard, shards):
            members += m
            labels += y
    return members, torch.tensor(labels, dtype=torch.long)


def _wds_classes(root: Path, labels: torch.Tensor, spec: str) -> tuple[str, ...]:
    names = root / "classes.txt"
    if names.is_file():
        try:
            classes = tuple(line.strip() for line in names.read_text().splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read '{names}' ({e}): one class name per line, in UTF-8") from None
    else:
        classes = tuple(str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0))
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise DatasetError(
            f"'{spec}' has a label {bad}, but labels must be 0 to {len(classes) - 1}"
            + (f", one per line of '{names}': add the class to it" if names.is_file() else ": labels are class indices")
        )
    return classes


@register_source
class WebDataset(Source):
    """webdataset tar shards: `wds:DIR` (DIR/train-*.tar, and DIR/val-*.tar as the validation split when there are
    any; else DIR/*.tar with a seeded validation fraction) or `wds:PATTERN`, a brace (or glob) pattern of shard paths
    such as `/data/imagenet/train-{000000..000146}.tar` (a seeded validation fraction).

    The webdataset convention: a tar's files are grouped into samples by key (the name up to the first dot of the
    basename); a sample holds an image (.jpg, .jpeg, .png, .webp, ...) and a .cls member, its class index as text.
    Class names come from a classes.txt (one per line) beside the shards, else they are the labels' numbers.

    Shards are indexed, not streamed: their tar headers are read once (no image is decoded; the .cls members' few
    bytes are) and each image becomes a `TarMember`, a shard path with the member's offset and size, which a
    DataLoader worker reads with one seek and one read. So sampling stays exact random access, as for an image
    folder: the seeded permutation, sharded across DDP ranks, gives the same batches for any number of workers and
    ranks, and `--resume` continues exactly. Streaming through `webdataset.WebDataset` shuffles within a buffer,
    splits shards between workers and ranks (the batches depend on how many there are) and cannot resume mid-epoch.
    Indexing reads each member's header (one seek and one 512-byte read, skipping the data) and no image: 10 000
    members (5 000 samples of an image and a label, as webdataset writes them) take 0.13 to 0.2 s from the page
    cache on one core (measured; Python's tarfile takes 0.5 to 1.1 s), so ImageNet's 1.28 million samples take
    35 to 50 s in each process that loads them. On network storage the reads' latency adds to that; 8 shards are
    indexed at once to overlap it.

    Left out: remote URLs (`pipe:`, `http://`, `s3://`) are not read; the shards must be on a local or
    network-mounted filesystem (the usual case on a SLURM cluster's shared storage). Compressed shards (.tar.gz) are
    not read: random access needs uncompressed tars, which is what webdataset writes.
    """

    name = "wds"
    usage = "wds:DIR|PATTERN"
    arg = "required"

    def load(self, arg, pre, val_fraction, seed):
        train_shards, val_shards, root = _wds_shards(arg)
        images, y = _index_shards(train_shards)
        if not images:
            raise DatasetError(
                f"the shards of 'wds:{arg}' hold no samples (an image and a .cls member under one key): check "
                "that they are webdataset shards"
            )
        info = {"shards": {"train": len(train_shards), "val": len(val_shards)}, "root": str(root)}
        if val_shards:
            val_images, val_y = _index_shards(val_shards)
            classes = _wds_classes(root, torch.cat([y, val_y]), f"wds:{arg}")
            return Split(images, y, pre), Split(val_images, val_y, pre), classes, info
        classes = _wds_classes(root, y, f"wds:{arg}")
        if len(images) < 3:
            raise DatasetError(
                f"the shards of 'wds:{arg}' hold {len(images)} samples; a train / validation split needs at least 3 "
                "(2 to train on, 1 to validate): add samples"
            )
        full = Split(images, y, pre)
        tr, va = _seeded_split(len(images), val_fraction, seed)
        return full.subset(tr), full.subset(va), classes, info

    def fingerprint(self, arg, file_hash):
        train_shards, val_shards, root = _wds_shards(arg)

        def listing(shards: list[Path]) -> list:
            return [[str(s), st.st_size, st.st_mtime_ns] for s in shards for st in [s.stat()]]

        names = root / "classes.txt"
        return {
            "train": listing(train_shards),  # the shards' sizes and times: hashing gigabytes would take minutes
            "val": listing(val_shards),
            "classes": file_hash(names) if names.is_file() else None,
        }
