"""`cnnlab convert-paddle` and `cnnlab export-paddle`: the lab's PaddlePaddle weights in and out.

    cnnlab convert-paddle best_model.pdparams --model lenet --out runs/lenet-from-paddle.ckpt
    cnnlab export-paddle runs/lenet/best.ckpt --out best_model.pdparams
"""

from __future__ import annotations

# Spelled out (and tested equal to cnnlab.interop.paddle_layouts.LAYOUT_NAMES) so that building the
# parser, e.g. for --help, does not import torch.
LAYOUT_NAMES = ("lab", "paddle-lenet", "paddle-vision")

LAYOUT_HELP = ("lab: the lab's Model_LeNet / Model_ResNet18; paddle-lenet: the lab's Paddle_LeNet; "
               "paddle-vision: paddle.vision.models.resnet18")


def add_layout_argument(parser, default="auto", dest="layout", flag="--layout"):
    """The --layout option, shared with evaluate/predict/train when they read a .pdparams file."""
    parser.add_argument(flag, dest=dest, default=default, choices=("auto", *LAYOUT_NAMES),
                        help=f"Paddle layout of the file ({LAYOUT_HELP}); default: {default}"
                        + (" (detected from the parameter names and shapes)" if default == "auto" else ""))


def register(sub):
    p = sub.add_parser(
        "convert-paddle",
        help="convert a Paddle .pdparams file of the lab into a cnnlab checkpoint",
        description="Read a .pdparams file written by the lab's notebook (paddle.save of a model's "
        "state_dict) without Paddle and without running any code from it, map the names and layouts "
        "to a cnnlab model, load it strictly and write a cnnlab checkpoint usable by evaluate, "
        "predict and train --init. in_channels, num_classes and the ResNet stem bias are read off "
        "the file.",
    )
    p.add_argument("file", metavar="FILE", help="the .pdparams file")
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="cnnlab model to load it into (Model_LeNet -> lenet, Paddle_LeNet -> "
                   "lenet-native, Model_ResNet18 -> resnet18 or resnet18-plain, "
                   "paddle.vision resnet18 -> resnet18-vision)")
    add_layout_argument(p)
    p.add_argument("--in-channels", type=int, default=None,
                   help="input channels (default: read from the stem conv weight)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes (default: read from the last linear layer)")
    p.add_argument("--out", required=True, metavar="CKPT", help="cnnlab checkpoint to write")
    p.set_defaults(func=convert_paddle)

    p = sub.add_parser(
        "export-paddle",
        help="write a cnnlab checkpoint's weights as a Paddle .pdparams file",
        description="Write the weights of a cnnlab checkpoint as the .pdparams file paddle.save "
        "would write for the lab's model, so that the original notebook can set_state_dict from "
        "it: custom-Conv2D biases [P,1] (Model_LeNet), Linear weights [in,out], BatchNorm "
        "_mean/_variance. Default layout: lenet -> lab (Model_LeNet), lenet-native -> "
        "paddle-lenet (Paddle_LeNet), resnet18* -> lab (Model_ResNet18), or paddle-vision when "
        "the model has no stem bias.",
    )
    p.add_argument("checkpoint", metavar="CKPT", help="a cnnlab checkpoint")
    p.add_argument("--out", required=True, metavar="FILE", help=".pdparams file to write")
    p.add_argument("--layout", default=None, choices=LAYOUT_NAMES,
                   help=f"Paddle layout to write ({LAYOUT_HELP}); default: the lab's for the model")
    p.set_defaults(func=export_paddle)


def _model_kwargs(args) -> dict:
    kwargs = {}
    if args.in_channels is not None:
        kwargs["in_channels"] = args.in_channels
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    return kwargs


def convert_paddle(args) -> int:
    from cnnlab.interop.paddle import model_from_pdparams
    from cnnlab.train.checkpoint import save_checkpoint

    layout = None if args.layout == "auto" else args.layout
    model, payload, info = model_from_pdparams(args.file, args.model, layout, **_model_kwargs(args))
    save_checkpoint(args.out, payload)
    kwargs = ", ".join(f"{k}={v}" for k, v in payload["model"]["kwargs"].items())
    print(f"{args.file}: {info.description}, {info.tensors} tensors, {info.values:,} values "
          f"-> {args.out} ({args.model}, {kwargs})")
    return 0


def export_paddle(args) -> int:
    from cnnlab.interop.paddle import write_pdparams
    from cnnlab.train.checkpoint import load_model

    model, payload = load_model(args.checkpoint)
    info = write_pdparams(model, args.out, layout=args.layout)
    print(f"{args.checkpoint} ({payload['model']['name']}) -> {args.out}: {info.description}, "
          f"{info.tensors} tensors, {info.values:,} values")
    return 0
