"""`cnnlab explore`: a local page where a student draws a digit and watches every layer compute.

- `inputs`: safe decoding of image bytes, and each model's input preparation (MNIST, RGB).
- `inference`: `Explorer`, one checkpoint with forward hooks: prediction, feature maps, kernels.
- `formula`: formula 5.13 with real numbers for one pixel of a conv layer's output.
- `server`: the HTTP server (standard library) with its Host/Origin/size rules and JSON API.
- `static/`: the page (HTML, JavaScript, CSS), served from the package; nothing from elsewhere.
"""
