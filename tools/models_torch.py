"""PyTorch architecture definitions for the Fashion-MNIST reference models.

Only plain building blocks are used (Conv2d, Linear, BatchNorm2d, ReLU,
MaxPool2d, AdaptiveAvgPool2d, flatten, residual add) so that every model can
be traced with torch.fx and exported layer by layer.

    build(name) -> fresh nn.Module, name in MODEL_NAMES
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
NUM_CLASSES = 10
INPUT_SHAPE = (1, 28, 28)  # C, H, W

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

MODEL_NAMES = ("mlp", "lenet5", "resnet20", "resnet18")


class MLP(nn.Module):
    """784-500-300-10 fully connected network."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.fc1 = nn.Linear(784, 500)
        self.fc2 = nn.Linear(500, 300)
        self.fc3 = nn.Linear(300, num_classes)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Classic LeNet-5 with ReLU and max pooling, 28x28 input (padding 2).

    widths: channels of conv1 and conv2, units of fc1 and fc2 (smaller ones
    make the test fixture model_lenet_small)."""

    def __init__(self, num_classes=NUM_CLASSES, widths=(6, 16, 120, 84)):
        super().__init__()
        c1, c2, f1, f2 = widths
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * 5 * 5, f1)
        self.fc2 = nn.Linear(f1, f2)
        self.fc3 = nn.Linear(f2, num_classes)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """ResNet basic block; shortcut is identity or 1x1 conv + BN (option B)."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        out = F.relu(out)
        return out


class ResNetCifar(nn.Module):
    """CIFAR-style ResNet: 3x3 stem (no max-pool), BasicBlock stages, GAP, FC."""

    def __init__(self, num_blocks, widths, strides, in_channels=1,
                 num_classes=NUM_CLASSES):
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers = []
        for n, w, s in zip(num_blocks, widths, strides):
            layers.append(self._make_layer(w, n, s))
        # Named layer1..layerN like the reference implementations.
        for i, layer in enumerate(layers):
            setattr(self, "layer%d" % (i + 1), layer)
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _make_layer(self, planes, num_blocks, stride):
        blocks = []
        for s in [stride] + [1] * (num_blocks - 1):
            blocks.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        if self.num_stages > 3:
            out = self.layer4(out)
        out = self.avgpool(out)
        out = torch.flatten(out, 1)
        return self.linear(out)


def resnet20(in_channels=1, num_classes=NUM_CLASSES):
    """ResNet-20 (He et al. 2016, CIFAR variant) with option-B shortcuts."""
    return ResNetCifar([3, 3, 3], [16, 32, 64], [1, 2, 2], in_channels, num_classes)


def resnet18(in_channels=1, num_classes=NUM_CLASSES):
    """CIFAR ResNet-18 (kuangliu/pytorch-cifar layout), no stem max-pool."""
    return ResNetCifar([2, 2, 2, 2], [64, 128, 256, 512], [1, 2, 2, 2],
                       in_channels, num_classes)


_BUILDERS = {
    "mlp": lambda: MLP(),
    "lenet5": lambda: LeNet5(),
    "resnet20": lambda: resnet20(),
    "resnet18": lambda: resnet18(),
}


def build(name):
    """Return a freshly initialised model for `name` (one of MODEL_NAMES)."""
    try:
        return _BUILDERS[name]()
    except KeyError:
        raise ValueError("unknown model %r (expected one of %s)"
                         % (name, ", ".join(MODEL_NAMES))) from None


if __name__ == "__main__":
    import torch.fx
    for n in MODEL_NAMES:
        m = build(n).eval()
        x = torch.zeros(2, *INPUT_SHAPE)
        gm = torch.fx.symbolic_trace(m)
        y = gm(x)
        assert torch.equal(y, m(x))
        nparams = sum(p.numel() for p in m.parameters())
        print("%-9s params=%9d out=%s" % (n, nparams, tuple(y.shape)))
