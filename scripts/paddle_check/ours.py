"""Our side of scripts/paddle_check/run.sh: export our models to .pdparams, or import Paddle's."""
import sys, numpy as np, torch
from cnnlab.models import build_model
from cnnlab.interop.paddle import write_pdparams, model_from_pdparams
torch.manual_seed(0)
rng = np.random.RandomState(0)
np.save("x.npy", rng.randn(2, 1, 32, 32).astype("float32"))
np.save("x3.npy", rng.randn(2, 3, 32, 32).astype("float32"))
x = torch.from_numpy(np.load("x.npy")); x3 = torch.from_numpy(np.load("x3.npy"))
mode = sys.argv[1]
cases = {"lenet": ("lenet", {}, x), "resnet18": ("resnet18", {}, x), "resnet18-plain": ("resnet18-plain", {}, x),
         "vision": ("resnet18", {"stem_bias": False, "in_channels": 3}, x3)}
for key, (name, kw, inp) in cases.items():
    if mode == "export":
        m = build_model(name, **kw)
        with torch.no_grad():
            for n, b in m.named_buffers():
                if "running_mean" in n: b.copy_(torch.rand_like(b))
                if "running_var" in n: b.copy_(torch.rand_like(b) + 0.5)
            for n, p in m.named_parameters():
                if "bn" in n or "downsample.1" in n: p.copy_(torch.randn_like(p) * 0.3 + (1 if n.endswith("weight") else 0))
        m.eval()
        write_pdparams(m, f"ours_{key}.pdparams", layout="paddle-vision" if key == "vision" else "lab")
        np.save(f"ours_{key}_out.npy", m(inp).detach().numpy())
    else:
        m = model_from_pdparams(f"pd_{key}.pdparams", name, layout="paddle-vision" if key == "vision" else None, **({} if key != "vision" else {}))
        m = m[0] if isinstance(m, tuple) else m
        m.eval()
        np.save(f"ours_from_pd_{key}_out.npy", m(inp).detach().numpy())
print("done", mode)
