"""One renderer per section of report.md: `render(phase_result, results) -> markdown`, and
`SECTIONS`, their order and titles."""

from __future__ import annotations

from cnnlab.report import lab_figures as lab
from cnnlab.report import speed_section, training_section
from cnnlab.report.markdown_helpers import array_text, fmt, sci, shape_text, table


# ------------------------------------------------------------------------------ sections

def render_data(phase, results) -> str:
    sizes = phase["sizes"]
    return (f"Source: {phase['source']}; split `{phase['split']}`: {sizes['train']:,} train / "
            f"{sizes['dev']:,} dev / {sizes['test']:,} test images, preprocessed once to float32 "
            f"{shape_text(phase['image_shape'])} "
            "(PIL bilinear resize 28→32, then (x − 127.5)/127.5, as the lab). The lab used the "
            "first 1000/200/200 images of its own `mnist.json.gz`, which is not public.\n")


def render_ops(phase, results) -> str:
    rows = []
    for r in phase["examples"]:
        if r["key"] == "conv_shapes":
            lab_v = f"{shape_text(r['lab']['stride1'])}, {shape_text(r['lab']['stride2'])}"
            vals = [f"{shape_text(r[i]['stride1'])}, {shape_text(r[i]['stride2'])}"
                    for i in ("reference", "fast")]
        elif r["key"] == "conv_multichannel":
            lab_v = "3 × " + array_text(r["lab"][0])
            vals = [("3 × " + array_text(r[i][0])) if all(c == r[i][0] for c in r[i])
                    else array_text(r[i]) for i in ("reference", "fast")]
        else:
            lab_v = array_text(r["lab"])
            vals = [array_text(r[i]) for i in ("reference", "fast")]
        rows.append([r["what"], lab_v, *vals, "yes" if r["match"] else "**NO**"])
    out = ["The lab's printed examples, computed by our loop (`reference`) and vectorised (`fast`) "
           "operators:", "",
           table(["example", "lab printed", "cnnlab reference", "cnnlab fast", "equal"], rows), "",
           "Equivalence with torch (`torch.nn.functional`), outputs and gradients, largest "
           "absolute difference:", ""]
    checks = phase["checks"]
    crow = [[c["name"], sci(c["max_abs_diff"]), sci(c["tolerance"]),
             "pass" if c["passed"] else "**FAIL**"] for c in checks]
    worst = max((c for c in checks if c["max_abs_diff"] is not None),
                key=lambda c: c["max_abs_diff"] / (c["tolerance"] or 1), default=None)
    failed = [c["name"] for c in checks if not c["passed"]]
    out += [f"**{sum(c['passed'] for c in checks)} of {len(checks)} checks pass**"
            + (f"; failed: {', '.join(failed)}" if failed else "")
            + (f". Closest to its tolerance: {worst['name']}, {sci(worst['max_abs_diff'])} "
               f"(tolerance {sci(worst['tolerance'])})." if worst else "."), "",
            "<details><summary>every check</summary>", "",
            table(["check", "max abs diff", "tolerance", ""], crow), "", "</details>", ""]
    return "\n".join(out)


def render_edges(phase, results) -> str:
    return (f"![Laplacian edge detection]({phase['image']})\n\n"
            f"The 8-neighbour Laplacian kernel [[-1,-1,-1],[-1,8,-1],[-1,-1,-1]] applied with our "
            f"convolution to a bundled test digit (a {phase['digit_label']}) resized to 256×256, as "
            f"the lab did with its own `number.jpg`: input {shape_text(phase['input_shape'])} → "
            f"feature map {shape_text(phase['output_shape'])} (no padding), values "
            f"{phase['output_range'][0]:.0f} to {phase['output_range'][1]:.0f}. The outline of the "
            "digit stands out, as in the lab.\n")


def render_shape_walk(phase, results) -> str:
    rows = [[r["name"], shape_text(r["output"]), shape_text(r["weight"]), shape_text(r["bias"]),
             r["lab_name"], shape_text(r["lab_output"]), shape_text(r["lab_weight"]),
             shape_text(r["lab_bias"]),
             "yes" if r["output_match"] else "**NO**"] for r in phase["rows"]]
    return "\n".join([
        "One [1, 1, 32, 32] input through LeNet-5's seven layers (the lab's loop over "
        "`model.sublayers()`):", "",
        table(["layer", "output", "weight", "bias", "lab layer", "lab output", "lab weight",
               "lab bias", "same output"], rows), "",
        "Output shapes agree. Parameter layouts differ on purpose: torch's Linear stores "
        "[out, in] where Paddle's stores [in, out], and our conv bias is [P] where the lab's "
        "custom Conv2D kept [P, 1] (which forced the lab to reshape biases by hand before loading "
        "them into Paddle's LeNet).", ""])


def render_counting(phase, results) -> str:
    le, rn = phase["lenet"], phase["resnet18"]
    rows = []
    for ours, (lname, lparams, lflops) in zip(le["layers"], lab.LENET_LAYERS):
        rows.append([ours["name"], ours["type"], fmt(ours["params"]), fmt(lparams),
                     fmt(ours["flops"]), fmt(lflops)])
    rows.append(["**total**", "", fmt(le["lab_params"]), fmt(lab.LENET_PARAMS), fmt(le["flops"]),
                 fmt(lab.LENET_FLOPS)])
    rrows = [["parameters + BN running stats (the lab's \"Total params\")", fmt(rn["lab_params"]),
              fmt(lab.RESNET18_LAB_PARAMS)],
             ["trainable parameters", fmt(rn["trainable_params"]),
              f"{lab.RESNET18_LAB_TRAINABLE:,} (old-Paddle bug, see below)"],
             ["BN running mean/var values", fmt(rn["buffer_values"]),
              f"{lab.RESNET18_LAB_NONTRAINABLE:,} \"non-trainable\""],
             ["FLOPs (lab convention)", fmt(rn["flops"]), fmt(lab.RESNET18_FLOPS)],
             ["MACs (conv + linear only)", fmt(rn["macs"]), "–"]]
    return "\n".join([
        "LeNet-5 on a [1, 1, 32, 32] input, per layer (FLOPs by the lab's `paddle.flops` rules: "
        "conv = output elements × C_in·k·k + output elements for the bias; linear = in × out; "
        "avg pool = output elements; ReLU and max pool = 0):", "",
        table(["layer", "type", "params", "lab params", "FLOPs", "lab FLOPs"], rows), "",
        f"Agreement with the lab: {'all figures equal' if le['match'] else '**differs**'}.", "",
        "ResNet18 (1×32×32 input, 10 classes, stem conv with bias):", "",
        table(["figure", "cnnlab", "lab"], rrows), "",
        f"Agreement: {'all equal' if rn['match'] else '**differs**'}. The lab printed "
        f"\"{lab.RESNET18_LAB_TRAINABLE:,} trainable / {lab.RESNET18_LAB_NONTRAINABLE:,} "
        f"non-trainable\": old Paddle (≤ 2.2, fixed in 2022) counted all four tensors of every "
        f"BatchNorm (weight, bias, running mean, running variance: 2 × 9,600 = 19,200) as "
        f"non-trainable. In truth the 9,600 BN weights and biases train, so "
        f"{lab.RESNET18_TRUE_TRAINABLE:,} parameters are trainable (torch's `parameters()`, and "
        f"current Paddle), plus {lab.RESNET18_BN_BUFFERS:,} running statistics = "
        f"{lab.RESNET18_LAB_PARAMS:,}.", ""])


def render_speed(phase, results) -> str:
    return speed_section.render(phase)


def render_torchvision(phase, results) -> str:
    good, bad = phase["proper"], phase["lab_protocol"]
    reasons = "\n".join(f"- {r}" for r in lab.TORCHVISION_CHECK["why_vacuous"])
    return "\n".join([
        "The lab loaded paddle.vision's `resnet18` weights into its own ResNet18 and printed "
        f"`max(diff)` = `{lab.TORCHVISION_CHECK['lab_printed']}`. That check could not fail:", "",
        reasons, "",
        "Done right here (the same check as `cnnlab check`): torchvision's `resnet18` with random "
        "weights and random, non-default BN running statistics and affine parameters, loaded "
        "**strictly** into ours (built with `stem_bias=False, in_channels=3, num_classes=1000`) "
        f"and back; both in **eval** mode; {good['dtype']}; a batch {shape_text(good['input'])}; "
        "the "
        "largest **absolute** difference of the logits:", "",
        table(["check", "max abs diff", "tolerance", "result"], [
            [c["name"], sci(c["max_abs_diff"]), sci(c["tolerance"]),
             "pass" if c["passed"] else "**FAIL**" + (f" ({c['error']})" if c.get("error") else "")]
            for c in good["checks"]]), "",
        "The lab's procedure, applied to a model that shares **only the final linear layer** with "
        "torchvision's (every convolution different):", "",
        table(["", "value"], [
            ["eval-mode max abs diff (the models really differ)", f"{bad['eval_mode_max_abs_diff']:.3f}"],
            ["torch, train mode, one image", "refuses: " + (bad.get("torch_refusal") or "–")],
            ["the lab's check (train mode, one 3×32×32 image, max(diff)), Paddle's arithmetic",
             sci(bad.get("max_diff"))]]), "",
        "The lab's check reports ≈ 0 for two different networks: with one image in train mode, "
        "every BatchNorm on the 1×1 maps of the last stage outputs its bias, so every logit equals "
        "the final layer's bias whatever the convolutions hold.", ""])


def render_prediction(phase, results) -> str:
    verdict = "correct" if phase["correct"] else "wrong"
    return "\n".join([
        f"![prediction]({phase['image']})", "",
        table(["", "true class", "predicted class", "probability"], [
            ["cnnlab (best LeNet, first test batch, sample 1)", phase["true"], phase["pred"],
             f"{phase['prob']:.3f}"],
            ["lab printout", phase["lab"]["true"], phase["lab"]["pred"], "not printed"]]), "",
        f"The prediction is {verdict}. Our test images are not the lab's (see \"What differs\"), "
        "so the digit itself differs.", ""])


SECTIONS = [
    ("data", "0. Data", render_data),
    ("ops", "1. Operators: the lab's worked examples, and checks against torch", render_ops),
    ("edges", "2. Edge detection with the Laplacian kernel", render_edges),
    ("shape_walk", "3. LeNet-5 layer by layer", render_shape_walk),
    ("counting", "4. Parameters and FLOPs", render_counting),
    ("speed", "5. Custom vs native operators: speed", render_speed),
    ("train:lenet", "6. LeNet-5 training with the custom (fast) operators", training_section.render),
    ("train:resnet18-plain", "7. ResNet18 without residual connections", training_section.render),
    ("train:resnet18", "8. ResNet18 with residual connections", training_section.render),
    ("torchvision_check", "9. Our ResNet18 vs torchvision's", render_torchvision),
    ("prediction", "10. Prediction demo", render_prediction),
]
