"""CIFAR-10 loading (`cnnlab.data.cifar10`): the official format, the lab split, every fault.

The files are synthetic but written as the official ones are (Python 2 cPickle protocol 2, see
cifar_helpers.py); the references are independent of cnnlab: the standard pickle module with
encoding="bytes", torchvision's own CIFAR10 dataset class, torchvision's ToTensor + Normalize.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import tarfile

import numpy as np
import pytest
import torch
import torchvision

from cifar_helpers import (ARCHIVE, CLASSES, FOLDER, Global, Py2Pickler, Py2Str, Reduce,
                           batch_dict, make_images, meta_dict, py2_dumps, write_archive,
                           write_cifar10)
from cnnlab.cli import main
from cnnlab.data import (CIFAR10_LAB_STD, CIFAR10_MEAN, CIFAR10_STD, CifarData, ImageSet,
                         MnistData, load_cifar10, load_data, normalize)
from cnnlab.data import cifar10 as C
from cnnlab.data.safe_pickle import UnsafePickleError
from cnnlab.errors import UserError
from test_paddle_interop import _RunsCode  # a pickle that calls what it is given

N = 20  # images per batch


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"), per_batch=N, archive=True)


@pytest.fixture
def copy(tmp_path, synthetic):
    """A fresh, writable copy of the synthetic folder (for the tests that damage it)."""
    folder = tmp_path / FOLDER
    folder.mkdir()
    for f in synthetic.folder.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    return folder


def one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------- the file format
def test_synthetic_batches_are_python2_pickles_like_the_official_ones(synthetic):
    blob = (synthetic.folder / "data_batch_1").read_bytes()
    ops = [op.name for op, _, _ in pickletools.genops(blob)]
    assert ops[0] == "PROTO" and blob[:2] == b"\x80\x02"
    assert {"SHORT_BINSTRING", "BINSTRING", "BININT1", "APPENDS", "SETITEMS", "REDUCE",
            "BUILD"} <= set(ops)
    assert not {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"} & set(ops)
    globals_ = {arg for op, arg, _ in pickletools.genops(blob) if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    # A Python-3-only loader (default ASCII decoding of py2 str) fails on them, as on the real ones.
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(blob)
    obj = pickle.loads(blob, encoding="bytes")
    assert set(obj) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert obj[b"data"].dtype == np.uint8 and obj[b"data"].shape == (N, 3072)
    assert obj[b"batch_label"] == b"training batch 1 of 5"


# ---------------------------------------------------------------------- the lab split
@pytest.mark.parametrize("form", ["root", "folder", "archive", "root-with-archive", "prefixed"])
def test_every_source_form_gives_the_lab_split(synthetic, tmp_path, form):
    if form == "root-with-archive":  # only the archive in the folder: read where it lies
        (tmp_path / ARCHIVE).write_bytes(synthetic.archive.read_bytes())
    source = {"root": synthetic.root, "folder": synthetic.folder, "archive": synthetic.archive,
              "root-with-archive": tmp_path, "prefixed": f"cifar10:{synthetic.root}"}[form]
    data = load_cifar10(source)
    assert isinstance(data, CifarData) and data.split == "lab"
    assert data.sizes == {"train": 4 * N, "dev": N, "test": N}
    assert data.classes == tuple(CLASSES)
    for name, files in (("train", [f"data_batch_{i}" for i in range(1, 5)]),
                        ("dev", ["data_batch_5"]), ("test", ["test_batch"])):
        part = data.part(name)
        assert isinstance(part, ImageSet)
        # Reference: the standard pickle module, planes R, G, B of 32 rows of 32 pixels.
        raw = [pickle.loads((synthetic.folder / f).read_bytes(), encoding="bytes") for f in files]
        want = np.concatenate([r[b"data"] for r in raw]).reshape(-1, 3, 32, 32)
        assert part.images.dtype == torch.uint8 and part.labels.dtype == torch.int64
        np.testing.assert_array_equal(part.images.numpy(), want)
        np.testing.assert_array_equal(part.labels.numpy(), sum((r[b"labels"] for r in raw), []))
        np.testing.assert_array_equal(part.indices, np.arange(len(want)))
    x, y = data.train[N + 3]  # the Dataset contract: (image [3,32,32] uint8, label)
    flat = synthetic.batches["data_batch_2"][0][3]
    assert x.shape == (3, 32, 32) and int(y) == synthetic.batches["data_batch_2"][1][3]
    assert [int(x[c, 5, 7]) for c in range(3)] == [flat[c * 1024 + 5 * 32 + 7] for c in range(3)]
    assert data.train.raw is data.train.images


def test_same_images_as_torchvision_reads_them(synthetic, monkeypatch):
    # torchvision's CIFAR10 (pickle.load(encoding="latin1"), reshape, HWC) on the same files;
    # its MD5 check is skipped: the files are synthetic.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    ours = load_cifar10(synthetic.root)
    for train, parts in ((True, (ours.train, ours.dev)), (False, (ours.test,))):
        tv = torchvision.datasets.CIFAR10(str(synthetic.root), train=train, download=False)
        images = torch.cat([p.images for p in parts]).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(images, tv.data)
        assert torch.cat([p.labels for p in parts]).tolist() == tv.targets
        assert list(ours.classes) == tv.classes


def test_loads_are_cached_until_a_file_changes(copy):
    a, b = load_cifar10(copy), load_cifar10(copy)
    assert a.train.images is b.train.images
    path = copy / "data_batch_5"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_cifar10(copy).train.images is not a.train.images


def test_split_full_is_the_lab_split_and_other_splits_are_refused(synthetic):
    assert load_cifar10(synthetic.root, "full").sizes == load_cifar10(synthetic.root).sizes
    with pytest.raises(UserError, match="unknown split 'small'"):
        load_cifar10(synthetic.root, "small")
    with pytest.raises(UserError, match="unknown data part 'val'"):
        load_cifar10(synthetic.root).part("val")


def test_load_data_dispatches_by_source_kind(synthetic):
    assert isinstance(load_data(f"cifar10:{synthetic.root}"), CifarData)
    assert isinstance(load_data("bundled"), MnistData)
    from cnnlab.data.mnist import load_mnist
    with pytest.raises(UserError, match="is CIFAR-10; this reads MNIST only"):
        load_mnist(f"cifar10:{synthetic.root}")
    with pytest.raises(UserError, match=r"cifar10:PATH"):
        load_data("cifar100:x")


def test_data_info_cli_prints_the_real_sizes(synthetic, capsys):
    assert main(["data", "info", f"cifar10:{synthetic.archive}"]) == 0
    out = capsys.readouterr().out
    assert f"train {4 * N} / dev {N} / test {N} images of [3, 32, 32] uint8" in out
    assert "airplane, automobile" in out


# ------------------------------------------------------------------------- normalisation
def test_normalize_is_totensor_then_normalize():
    import torchvision.transforms as T

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g)
    for mean, std in ((CIFAR10_MEAN, CIFAR10_LAB_STD), (CIFAR10_MEAN, CIFAR10_STD)):
        ref = torch.stack([T.Normalize(mean, std)(T.ToTensor()(img.permute(1, 2, 0).numpy()))
                           for img in images])
        out = normalize(images, mean, std)
        assert out.dtype == torch.float32 and out.device == images.device
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    last = normalize(images.contiguous(memory_format=torch.channels_last))
    assert last.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(last, normalize(images))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_normalize_stays_on_the_gpu():  # pragma: no cover - needs a GPU
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = normalize(images.cuda())
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), normalize(images))


def test_normalisation_constants_and_how_they_differ():
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465)
    assert CIFAR10_LAB_STD == (0.2023, 0.1994, 0.2010)
    assert CIFAR10_STD == (0.2470, 0.2435, 0.2616)
    # The notebook's std is a mean of per-image stds, which is smaller than the channel's std
    # whenever images differ in brightness: channel_stats computes both, checked with numpy.
    images, _ = make_images(50, seed=3)
    x = images.reshape(50, 3, 1024).astype(np.float64) / 255
    stats = C.channel_stats(torch.from_numpy(images.reshape(50, 3, 32, 32)))
    np.testing.assert_allclose(stats["mean"], x.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], x.transpose(1, 0, 2).reshape(3, -1).std(axis=1),
                               rtol=1e-9)
    np.testing.assert_allclose(stats["mean_image_std"], x.std(axis=2).mean(axis=0), rtol=1e-12)
    assert all(a < b for a, b in zip(stats["mean_image_std"], stats["std"]))


# ------------------------------------------------------------------------ faults
def _rewrite(folder, name, obj):
    (folder / name).write_bytes(py2_dumps(obj))


def _batch(**change):
    data, labels = make_images(N, seed=1)
    d = batch_dict(data, labels, "training batch 3 of 5")
    d.update(change)
    return {k: v for k, v in d.items() if v is not None}


@pytest.mark.parametrize("name, obj, fault", [
    ("data_batch_3", _batch(data=np.zeros((N, 3071), np.uint8)), r"data is uint8 \[20, 3071\]"),
    ("data_batch_3", _batch(data=np.zeros((N, 32, 32, 3), np.uint8)),
     r"data is uint8 \[20, 32, 32, 3\]"),
    ("data_batch_3", _batch(labels=None), "no 'labels' entry"),
    ("data_batch_3", _batch(labels=[1] * (N - 1)), "19 labels for 20 images"),
    ("data_batch_3", _batch(labels=[0] * 7 + [10] + [0] * (N - 8)),
     "label 10 at position 7 is out of range"),
    ("data_batch_3", _batch(labels=[-1] * N), "label -1 at position 0"),
    ("data_batch_3", _batch(labels=["cat"] * N), "labels must be a list of integers"),
    ("test_batch", _batch(data=np.zeros((N + 1, 3072), np.uint8), labels=[0] * (N + 1)),
     "21 images, but batches.meta says 20 per batch"),
    ("data_batch_3", [1, 2, 3], "holds a list, not the dict"),
    ("batches.meta", {**meta_dict(N), "label_names": CLASSES[:9]}, "label_names must be 10 names"),
    ("batches.meta", {**meta_dict(N), "num_vis": 1024}, "num_vis 1024"),
    ("data_batch_3", {"fine_labels": [0] * N, "data": np.zeros((N, 3072), np.uint8)},
     "looks like CIFAR-100"),
])
def test_malformed_files_name_the_file_and_the_fault(copy, capsys, name, obj, fault):
    _rewrite(copy, name, obj)
    with pytest.raises(UserError, match=fault) as err:
        load_cifar10(copy)
    assert str(copy / name) in str(err.value)
    assert main(["data", "info", f"cifar10:{copy}"]) == 2
    assert fault.replace("\\", "") in one_line_error(capsys)


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_damaged_batch_files(copy, damage):
    path = copy / "data_batch_2"
    blob = path.read_bytes()
    path.write_bytes({"truncated": blob[: len(blob) // 2], "empty": b"",
                      "garbage": b"not a pickle at all"}[damage])
    with pytest.raises(UserError, match="not a CIFAR-10 python batch") as err:
        load_cifar10(copy)
    assert str(path) in str(err.value)


def test_missing_files(copy, tmp_path):
    (copy / "data_batch_3").unlink()
    with pytest.raises(UserError, match=r"data_batch_3: not found"):
        load_cifar10(copy)
    with pytest.raises(UserError, match="not found; expected a folder holding cifar-10-batches-py"):
        load_cifar10(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no cifar-10-batches-py/, CIFAR-10 batches or"):
        load_cifar10(tmp_path / "empty")


@pytest.mark.parametrize("writer", ["python3", "python2"])
def test_a_batch_that_runs_code_is_refused_and_nothing_runs(copy, tmp_path, capsys, writer):
    marker = tmp_path / "pwned"
    if writer == "python3":
        blob = pickle.dumps({"data": _RunsCode(os.system, f"touch {marker}"), "labels": []},
                            protocol=2)
    else:  # the same attack in the official files' own dialect
        command = Py2Str(f"touch {marker}".encode())
        blob = Py2Pickler().dumps(Reduce(Global("os", "system"), (command,)))
    (copy / "data_batch_4").write_bytes(blob)
    with pytest.raises(UnsafePickleError, match=r"refusing the global `(os|posix)\.system`: a "
                       r"CIFAR-10 batch holds only") as err:
        load_cifar10(copy)
    assert str(copy / "data_batch_4") in str(err.value) and "nothing was executed" in str(err.value)
    assert main(["data", "info", f"cifar10:{copy}"]) == 2
    one_line_error(capsys)
    assert not marker.exists()
    if writer == "python3":  # control: the plain pickle module does run it
        pickle.loads(blob)
        assert marker.exists()


def test_the_cifar_allow_list_is_narrower_than_the_pdparams_one(copy):
    # OrderedDict is allowed in .pdparams files, never needed by a CIFAR-10 batch.
    blob = b"\x80\x02ccollections\nOrderedDict\n)R."
    (copy / "data_batch_1").write_bytes(blob)
    with pytest.raises(UnsafePickleError, match="`collections.OrderedDict`"):
        load_cifar10(copy)


def test_an_allowed_global_cannot_allocate_what_the_file_does_not_hold(copy):
    # numpy's _reconstruct asked for 2**40 bytes instead of the (0,) numpy always writes.
    zero = b"K\x00\x85U\x01b"  # BININT1 0, TUPLE1, 'b': _reconstruct's (0,) and dtype code
    huge = b"\x8a\x06" + (2**40).to_bytes(6, "little") + zero[2:]  # LONG1 2**40
    blob = py2_dumps(_batch())
    assert blob.count(zero) == 1
    (copy / "data_batch_1").write_bytes(blob.replace(zero, huge))
    with pytest.raises(UserError, match=r"preallocate an array of shape \(1099511627776,\)"):
        load_cifar10(copy)


def test_damaged_archives(synthetic, tmp_path, capsys):
    blob = synthetic.archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(blob[: len(blob) * 2 // 3])
    with pytest.raises(UserError, match="cannot read the archive .*truncated or not a tar.gz"):
        load_cifar10(truncated)
    assert main(["data", "info", f"cifar10:{truncated}"]) == 2
    assert str(truncated) in one_line_error(capsys)

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / FOLDER).mkdir()
    for f in synthetic.folder.iterdir():
        if f.name != "test_batch":
            (partial / FOLDER / f.name).write_bytes(f.read_bytes())
    write_archive(partial / FOLDER, tmp_path / "partial.tar.gz")
    with pytest.raises(UserError, match="no cifar-10-batches-py/test_batch in the archive"):
        load_cifar10(tmp_path / "partial.tar.gz")

    # A link where a batch should be is refused, not followed.
    (partial / FOLDER / "data_batch_1").unlink()
    link = tarfile.TarInfo(f"{FOLDER}/data_batch_1")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    write_archive(partial / FOLDER, tmp_path / "link.tar.gz", extra=[(link, None)])
    with pytest.raises(UserError, match="data_batch_1 is a link or special file"):
        load_cifar10(tmp_path / "link.tar.gz")


# ------------------------------------------------------------------------ learnable
def test_the_synthetic_images_are_learnable():
    # A short CPU training of a small conv net gets far above chance (0.1) on held-out images:
    # the fixture can show learning in training tests.
    torch.manual_seed(0)
    x_train, y_train = make_images(100, seed=1)
    x_test, y_test = make_images(100, seed=2)
    prep = lambda x: normalize(torch.from_numpy(x).reshape(-1, 3, 32, 32))  # noqa: E731
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs, ys = prep(x_train), torch.from_numpy(y_train)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    with torch.no_grad():
        acc = (model(prep(x_test)).argmax(1) == torch.from_numpy(y_test)).float().mean().item()
    assert acc > 0.6, acc  # 1.0 over seeds 0-3


def test_load_benchmark_runs(capsys):
    # benchmarks/cifar_load.py end to end on a tiny synthetic set (in-process: no second torch).
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cifar_load.py"
    spec = importlib.util.spec_from_file_location("cifar_load", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--per-batch", "20", "--reps", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == {"train": 80, "dev": 20, "test": 20} and result["pairs"] == 2
    assert result["load_cifar10_folder_s"] > 0 and result["load_cifar10_archive_s"] > 0
