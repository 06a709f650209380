"""`cnnlab evaluate CKPT` (accuracy and loss on a data split) and `cnnlab predict CKPT IMAGE...`."""

from __future__ import annotations

import argparse

from cnnlab.atomic import json_text
from cnnlab.cli.paddle import add_layout_argument
from cnnlab.data.sources import SOURCE_HELP
from cnnlab.errors import UserError

PREDICT_EPILOG = """\
For an MNIST model, each image (any size, colour or grey) is prepared like the lab's data:
converted to grey, resized to 28x28 (an MNIST digit's size) with bilinear filtering, inverted if
it looks like dark ink on light paper (MNIST digits are light on dark; see --invert), then
resized to 32x32 bilinear and normalised to (x - 127.5) / 127.5.

For a CIFAR-10 model (3 input channels), each image is prepared like CIFAR's test images: RGB,
the largest centred square, resized to 32x32 (bicubic), then normalised as the model was
trained (the notebook's or the true per-channel mean/std, from the checkpoint), with flip TTA
if its run used it. Class names come from batches.meta of the checkpoint's data (or --data).
"""


def register(sub):
    p = sub.add_parser("evaluate", help="accuracy and loss of a checkpoint on MNIST or CIFAR-10",
                       description="Evaluate a checkpoint (e.g. runs/lenet/best.pt) on the data it "
                                   "was trained on, or on --data; the loss is the mean over images.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a cnnlab checkpoint (best.pt / last.pt) or a Paddle .pdparams file")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help=f"{SOURCE_HELP} (default: the checkpoint's, else bundled)")
    p.add_argument("--split", choices=("train", "dev", "test"), default="test",
                   help="which part to evaluate (default test)")
    p.add_argument("--data-split", choices=("lab", "full"), default=None,
                   help="lab (1000/200/200) or full sizes (default: the checkpoint's, else lab)")
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="only the first N images of the part (default: as the checkpoint's run "
                        "trained, --subset included)")
    _common(p)
    _tta_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON: acc, loss, n and the settings")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("predict", help="classify image files with a checkpoint",
                       description="Print the predicted class (an MNIST digit, or a CIFAR-10 "
                                   "class and its name) and its probability for each image.",
                       epilog=PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a cnnlab checkpoint (best.pt / last.pt) or a Paddle .pdparams file")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="MNIST: invert grey levels: auto = when the image border is light "
                        "(default)")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help="CIFAR-10: where batches.meta with the class names is (default: the "
                        "checkpoint's data)")
    _common(p)
    _tta_argument(p)
    p.add_argument("--json", action="store_true", help="print JSON: one object per image")
    p.set_defaults(func=run_predict)


def _common(p):
    p.add_argument("--model", default=None,
                   help="fail unless the checkpoint holds this model (e.g. lenet, resnet18); "
                        "required for a Paddle .pdparams file: the model it holds")
    add_layout_argument(p)  # --layout, for a .pdparams CKPT
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per batch (default: the checkpoint's run's, else 64)")


def _tta_argument(p):
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test-time augmentation (default: as the checkpoint's run did)")


def load_checkpoint_model(path, expect=None, device="auto", layout="auto"):
    """-> (model on device, payload); a wrong, corrupt or mismatched checkpoint is a UserError.

    A Paddle `.pdparams` file (the lab's notebook) is read safely into model `expect`."""
    from cnnlab.interop.paddle import is_pdparams, model_from_pdparams
    from cnnlab.train.checkpoint import load_model
    from cnnlab.train.runner import resolve_device

    dev = resolve_device(device)
    if expect is not None:
        from cnnlab.models import MODEL_NAMES
        if expect not in MODEL_NAMES:
            raise UserError(f"unknown model {expect!r}; known models: {', '.join(MODEL_NAMES)}")
    if is_pdparams(path):
        if expect is None:
            raise UserError(f"{path} is a Paddle .pdparams file: say which model it holds with "
                            "--model (e.g. --model lenet)")
        model, payload, _ = model_from_pdparams(path, expect, None if layout == "auto" else layout)
    else:
        model, payload = load_model(path, expect=expect)
    return model.to(dev).eval(), payload


def run_evaluate(args) -> int:
    import torch.nn.functional as F

    from cnnlab.data import TensorLoader, load_data, subset
    from cnnlab.train.metric import Accuracy
    from cnnlab.train.recipes import configure_evaluation
    from cnnlab.train.runner import Runner

    _batch_size(args, {})  # a bad --batch-size fails before any work
    model, payload = load_checkpoint_model(args.checkpoint, args.model, args.device, args.layout)
    config = payload.get("config") or {}
    batch_size = _batch_size(args, config)
    source = args.data or config.get("data") or "bundled"
    split = args.data_split or config.get("split") or "lab"
    data = load_data(source, split)
    n = args.subset if args.subset is not None else config.get("subset")
    if n is not None:
        data = subset(data, n)
    part = data.part(args.split)
    channels = _model_in_channels(payload)
    if channels is not None and channels != part.images.shape[1]:
        raise UserError(f"{args.checkpoint} expects {channels}-channel images, the data has "
                        f"{part.images.shape[1]}")
    runner = Runner(model, None, F.cross_entropy, Accuracy(is_logits=True), device=args.device,
                    progress=False, log=False)
    configure_evaluation(runner, config, part.images, tta=args.tta)
    acc, loss = runner.evaluate(TensorLoader(part, batch_size))
    result = {"acc": acc, "loss": loss, "n": len(part), "checkpoint": str(args.checkpoint),
              "model": payload["model"]["name"], "data": source,
              "data_split": split, "split": args.split, "tta": runner.tta}
    if args.json:
        print(json_text(result))
    else:
        print(f"{result['model']} on {source} {split}/{args.split} ({len(part)} images"
              f"{', flip TTA' if runner.tta else ''}): accuracy {acc:.4f}, loss {loss:.4f}")
    return 0


def _batch_size(args, config) -> int:
    from cnnlab.train.validate import check_int

    if args.batch_size is not None:
        return check_int("--batch-size", args.batch_size, 1)
    stored = config.get("batch_size")
    return stored if isinstance(stored, int) and stored > 0 else 64


def _model_in_channels(payload):
    return payload["model"]["kwargs"].get("in_channels")  # checked: a dict


def run_predict(args) -> int:
    import torch

    _batch_size(args, {})  # a bad --batch-size fails before any work
    model, payload = load_checkpoint_model(args.checkpoint, args.model, args.device, args.layout)
    config = payload.get("config") or {}
    channels = _model_in_channels(payload) or 1
    # Every image is read before the first prediction: a bad file fails before any output.
    inputs = _prepare_images(args, channels)
    classes = _class_names(args, config) if channels == 3 else None
    batch_size = _batch_size(args, config)
    runner = _predictor(model, config, inputs[0], args)
    rows = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            x = torch.cat(inputs[start:start + batch_size])
            if channels not in (1, 3):
                x = x.expand(-1, channels, -1, -1)  # a grey image on every channel
            probs = torch.softmax(runner.predict(x).float(), dim=1).cpu()
            for path, p in zip(args.images[start:start + batch_size], probs):
                k = int(p.argmax())
                row = {"image": str(path), "class": k, "prob": float(p[k])}
                if classes is not None:
                    row["name"] = classes[k] if k < len(classes) else None
                rows.append(row)
    for row in rows:
        if args.json:
            print(json_text(row))
        else:
            name = f" {row['name']}" if row.get("name") else ""
            print(f"{row['image']}: {row['class']}{name} (p={row['prob']:.3f})")
    return 0


def _prepare_images(args, channels) -> list:
    """Each image file as the model's input batch of one: float [1,1,32,32] for MNIST models,
    uint8 [1,3,32,32] for CIFAR-10 models (normalised by the Runner's batch transform)."""
    from cnnlab.data.images import load_image, load_rgb_image, prepare_image, prepare_rgb_image

    if channels == 3:
        return [prepare_rgb_image(load_rgb_image(p))[None] for p in args.images]
    return [prepare_image(load_image(p), args.invert)[1] for p in args.images]


def _predictor(model, config, example, args):
    import torch.nn.functional as F

    from cnnlab.train.metric import Accuracy
    from cnnlab.train.recipes import configure_evaluation
    from cnnlab.train.runner import Runner

    runner = Runner(model, None, F.cross_entropy, Accuracy(), device=args.device, progress=False,
                    log=False)
    configure_evaluation(runner, config, example, tta=args.tta)
    return runner


def _class_names(args, config):
    """CIFAR-10 class names from batches.meta of --data or the checkpoint's data; None (with a
    note on stderr) when neither can be read."""
    import sys

    from cnnlab.data.cifar10 import read_class_names

    source = args.data or config.get("data")
    if not source or not str(source).startswith("cifar10:"):
        if args.data:
            raise UserError(f"--data {args.data}: class names come from a CIFAR-10 source "
                            "(cifar10:PATH)")
        return None
    try:
        return read_class_names(source)
    except UserError as err:
        if args.data:
            raise
        print(f"cnnlab predict: note: no class names ({err}); give --data cifar10:PATH",
              file=sys.stderr)
        return None
