#!/usr/bin/python3
"""Writes resnet20 as a PyTorch user would export it, for the import speed
benchmark (bench/import_speed.sh): the zoo's resnet20 (input 1x28x28, conv3x3
1->16 + BN + ReLU, 3 stages x 3 basic blocks at 16/32/64 channels with 1x1
conv + BN projections where the shape changes, global average pooling,
x.view(x.size(0), -1), linear 64->10), random weights, exported by
torch.onnx at opset 13 with its batch norms kept (a module in train() mode,
TrainingMode.PRESERVE), so that lsq trains the same layers as the zoo's.

    /usr/bin/python3 bench/resnet20_onnx.py OUT.onnx
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.sc = None
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False),
                                    nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (self.sc(x) if self.sc is not None else x))


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.adaptive_avg_pool2d(self.blocks(x), 1)
        return self.fc(x.view(x.size(0), -1))


torch.manual_seed(1)
m = ResNet20().train()
torch.onnx.export(m, torch.zeros(2, 1, 28, 28), sys.argv[1], opset_version=13,
                  training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                  input_names=["image"], output_names=["logits"],
                  dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
