"""`cnnlab evaluate CKPT` (accuracy and loss on a data split) and `cnnlab predict CKPT IMAGE...`."""

from __future__ import annotations

import argparse

from cnnlab.atomic import json_text
from cnnlab.cli.paddle import add_layout_argument
from cnnlab.data.sources import SOURCE_HELP
from cnnlab.errors import UserError

PREDICT_EPILOG = """\
Each image (any size, colour or grey) is prepared like the lab's data: converted to grey, resized
to 28x28 (an MNIST digit's size) with bilinear filtering, inverted if it looks like dark ink on
light paper (MNIST digits are light on dark; see --invert), then resized to 32x32 bilinear and
normalised to (x - 127.5) / 127.5.
"""


def register(sub):
    p = sub.add_parser("evaluate", help="accuracy and loss of a checkpoint on MNIST",
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
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON: acc, loss, n and the settings")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("predict", help="classify image files with a checkpoint",
                       description="Print the predicted digit and its probability for each image.",
                       epilog=PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a cnnlab checkpoint (best.pt / last.pt) or a Paddle .pdparams file")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert grey levels: auto = when the image border is light (default)")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON: one object per image")
    p.set_defaults(func=run_predict)


def _common(p):
    p.add_argument("--model", default=None,
                   help="fail unless the checkpoint holds this model (e.g. lenet, resnet18); "
                        "required for a Paddle .pdparams file: the model it holds")
    add_layout_argument(p)  # --layout, for a .pdparams CKPT
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")


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

    from cnnlab.data import TensorLoader, load_mnist
    from cnnlab.train.metric import Accuracy
    from cnnlab.train.runner import Runner
    from cnnlab.train.validate import check_int

    check_int("--batch-size", args.batch_size, 1)
    model, payload = load_checkpoint_model(args.checkpoint, args.model, args.device, args.layout)
    config = payload.get("config") or {}
    source = args.data or config.get("data") or "bundled"
    split = args.data_split or config.get("split") or "lab"
    data = load_mnist(source, split)
    part = data.part(args.split)
    channels = _model_in_channels(payload)
    if channels is not None and channels != part.images.shape[1]:
        raise UserError(f"{args.checkpoint} expects {channels}-channel images, the data has "
                        f"{part.images.shape[1]}")
    runner = Runner(model, None, F.cross_entropy, Accuracy(is_logits=True), device=args.device,
                    progress=False, log=False)
    acc, loss = runner.evaluate(TensorLoader(part, args.batch_size))
    result = {"acc": acc, "loss": loss, "n": len(part), "checkpoint": str(args.checkpoint),
              "model": payload["model"]["name"], "data": source,
              "data_split": split, "split": args.split}
    if args.json:
        print(json_text(result))
    else:
        print(f"{result['model']} on {source} {split}/{args.split} ({len(part)} images): "
              f"accuracy {acc:.4f}, loss {loss:.4f}")
    return 0


def _model_in_channels(payload):
    return payload["model"]["kwargs"].get("in_channels")  # checked: a dict


def run_predict(args) -> int:
    import torch

    from cnnlab.data.images import load_image, prepare_image
    from cnnlab.train.validate import check_int

    check_int("--batch-size", args.batch_size, 1)
    # Read every image first: a bad file fails before any model work.
    inputs = [prepare_image(load_image(p), args.invert)[1] for p in args.images]
    model, payload = load_checkpoint_model(args.checkpoint, args.model, args.device, args.layout)
    channels = _model_in_channels(payload) or 1
    device = next(model.parameters()).device
    rows = []
    with torch.no_grad():
        for start in range(0, len(inputs), args.batch_size):
            x = torch.cat(inputs[start:start + args.batch_size]).to(device)
            if channels != 1:
                x = x.expand(-1, channels, -1, -1)  # a grey image on every channel
            probs = torch.softmax(model(x), dim=1).cpu()
            for path, p in zip(args.images[start:start + args.batch_size], probs):
                k = int(p.argmax())
                rows.append({"image": str(path), "class": k, "prob": float(p[k])})
    for row in rows:
        if args.json:
            print(json_text(row))
        else:
            print(f"{row['image']}: {row['class']} (p={row['prob']:.3f})")
    return 0
