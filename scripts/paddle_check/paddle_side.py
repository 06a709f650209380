"""Paddle side of scripts/paddle_check/run.sh: the lab's models (code from the lab text) load/save .pdparams."""
import sys, numpy as np, paddle, paddle.nn as nn, paddle.nn.functional as F
paddle.set_device("cpu")
mode = sys.argv[1]

class Conv2D(nn.Layer):  # the lab's multi-channel Conv2D, verbatim logic
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(value=1.0)),
                 bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(value=0.0))):
        super().__init__()
        self.weight = paddle.create_parameter(shape=[out_channels, in_channels, kernel_size, kernel_size], dtype='float32', attr=weight_attr)
        self.bias = paddle.create_parameter(shape=[out_channels, 1], dtype='float32', attr=bias_attr)
        self.stride, self.padding, self.in_channels, self.out_channels = stride, padding, in_channels, out_channels
    def single_forward(self, X, weight):
        new_X = paddle.zeros([X.shape[0], X.shape[1]+2*self.padding, X.shape[2]+2*self.padding])
        new_X[:, self.padding:X.shape[1]+self.padding, self.padding:X.shape[2]+self.padding] = X
        u, v = weight.shape
        ow = (new_X.shape[1] - u) // self.stride + 1; oh = (new_X.shape[2] - v) // self.stride + 1
        output = paddle.zeros([X.shape[0], ow, oh])
        for i in range(ow):
            for j in range(oh):
                output[:, i, j] = paddle.sum(new_X[:, self.stride*i:self.stride*i+u, self.stride*j:self.stride*j+v]*weight, axis=[1,2])
        return output
    def forward(self, inputs):
        fms = []
        for w, b in zip(self.weight, self.bias):
            outs = [self.single_forward(inputs[:, i, :, :], w[i]) for i in range(self.in_channels)]
            fms.append(paddle.sum(paddle.stack(outs), axis=0) + b)
        return paddle.stack(fms, 1)

class Pool2D(nn.Layer):
    def __init__(self, size=(2,2), mode='max', stride=1):
        super().__init__(); self.mode = mode; self.h, self.w = size; self.stride = stride
    def forward(self, x):
        ow = (x.shape[2] - self.w) // self.stride + 1; oh = (x.shape[3] - self.h) // self.stride + 1
        out = paddle.zeros([x.shape[0], x.shape[1], ow, oh])
        for i in range(ow):
            for j in range(oh):
                win = x[:, :, self.stride*i:self.stride*i+self.w, self.stride*j:self.stride*j+self.h]
                out[:, :, i, j] = paddle.max(win, axis=[2,3]) if self.mode == 'max' else paddle.mean(win, axis=[2,3])
        return out

class Model_LeNet(nn.Layer):
    def __init__(self, in_channels, num_classes=10):
        super().__init__()
        self.conv1 = Conv2D(in_channels, 6, 5, weight_attr=paddle.ParamAttr()); self.pool2 = Pool2D((2,2), 'max', 2)
        self.conv3 = Conv2D(6, 16, 5, weight_attr=paddle.ParamAttr()); self.pool4 = Pool2D((2,2), 'avg', 2)
        self.conv5 = Conv2D(16, 120, 5, weight_attr=paddle.ParamAttr())
        self.linear6 = nn.Linear(120, 84); self.linear7 = nn.Linear(84, num_classes)
    def forward(self, x):
        o = self.pool2(F.relu(self.conv1(x))); o = self.pool4(F.relu(self.conv3(o))); o = F.relu(self.conv5(o))
        o = paddle.squeeze(o, axis=[2,3]); return self.linear7(F.relu(self.linear6(o)))

class ResBlock(nn.Layer):
    def __init__(self, i, o, stride=1, use_residual=True):
        super().__init__(); self.use_residual = use_residual
        self.conv1 = nn.Conv2D(i, o, 3, padding=1, stride=stride, bias_attr=False)
        self.conv2 = nn.Conv2D(o, o, 3, padding=1, bias_attr=False)
        self.use_1x1conv = i != o or stride != 1
        if self.use_1x1conv: self.shortcut = nn.Conv2D(i, o, 1, stride=stride, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(o); self.bn2 = nn.BatchNorm2D(o)
        if self.use_1x1conv: self.bn3 = nn.BatchNorm2D(o)
    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x))); y = self.bn2(self.conv2(y))
        if self.use_residual:
            y = paddle.add(self.bn3(self.shortcut(x)) if self.use_1x1conv else x, y)
        return F.relu(y)

def Model_ResNet18(in_channels, num_classes, use_residual):
    m1 = nn.Sequential(nn.Conv2D(in_channels, 64, 7, stride=2, padding=3), nn.BatchNorm2D(64), nn.ReLU(), nn.MaxPool2D(3, 2, 1))
    def mod(i, o, s): return nn.Sequential(ResBlock(i, o, s, use_residual), ResBlock(o, o, 1, use_residual))
    net = nn.Sequential(m1, mod(64,64,1), mod(64,128,2), mod(128,256,2), mod(256,512,2), nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(512, num_classes))
    class M(nn.Layer):
        def __init__(s): super().__init__(); s.net = net
        def forward(s, x): return s.net(x)
    return M()

def build(name):
    if name == "lenet": return Model_LeNet(1, 10)
    if name == "resnet18": return Model_ResNet18(1, 10, True)
    if name == "resnet18-plain": return Model_ResNet18(1, 10, False)
    if name == "vision": return paddle.vision.models.resnet18(num_classes=10)

x = paddle.to_tensor(np.load("x.npy")) if mode == "load" else None
name = sys.argv[2]
if mode == "load":   # our exported file -> Paddle model -> outputs
    m = build(name); m.eval()
    xin = x if name != "vision" else paddle.to_tensor(np.load("x3.npy"))
    missing = m.set_state_dict(paddle.load(sys.argv[3]))
    np.save(sys.argv[4], m(xin).numpy()); print("paddle loaded", name, missing)
else:                 # a Paddle model with random weights -> paddle.save -> outputs
    paddle.seed(7); m = build(name)
    for k, v in m.state_dict().items():  # non-default BN stats
        if "_mean" in k or "_variance" in k: v.set_value(paddle.rand(v.shape) + (0.5 if "_variance" in k else 0))
    m.eval(); xin = paddle.to_tensor(np.load("x.npy" if name != "vision" else "x3.npy"))
    paddle.save(m.state_dict(), sys.argv[3]); np.save(sys.argv[4], m(xin).numpy()); print("paddle saved", name)
