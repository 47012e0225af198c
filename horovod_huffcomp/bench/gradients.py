"""Real gradients: small models trained for a few steps on scikit-learn's digits (torch, CPU).

Three models, as in the issue: an MLP (64-1024-1024-10, 1.1M parameters), a small CNN (two
3x3 convolutions, 64 and 128 channels, then 2048-256-10; 0.6M) and a transformer block
(d = 256, 8 heads, FFN 1024, the rows of an image as 8 tokens; 0.8M); each is trained
with SGD + momentum for ``steps`` steps, then the gradients of one more mini-batch are taken,
tensor by tensor (what a Horovod compressor sees).
"""
from __future__ import annotations



def _models():
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 1024), nn.ReLU(),
                                     nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))

        def forward(self, x):
            return self.net(x)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 16, 256), nn.ReLU(),
                                      nn.Linear(256, 10))

        def forward(self, x):
            return self.head(self.features(x.view(-1, 1, 8, 8)))

    class Transformer(nn.Module):
        """Each image is 8 tokens (its rows) of 8 pixels."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(8, 256)
            self.pos = nn.Parameter(torch.zeros(8, 256))
            self.block = nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True)
            self.head = nn.Linear(256, 10)

        def forward(self, x):
            h = self.block(self.embed(x.view(-1, 8, 8)) + self.pos)
            return self.head(h.mean(1))

    return {"mlp": MLP, "cnn": CNN, "transformer": Transformer}


MODELS = ("mlp", "cnn", "transformer")


def digits_tensors():
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y


def model_gradients(name: str, steps: int = 20, batch: int = 64, seed: int = 0):
    """[(parameter name, float32 gradient array)] after ``steps`` training steps."""
    return worker_gradients(name, 1, steps, batch, seed)[0]


def worker_gradients(name: str, workers: int, steps: int = 20, batch: int = 64, seed: int = 0):
    """What ``workers`` data-parallel workers hold after ``steps`` training steps: one
    [(parameter name, float32 gradient array)] per worker, same weights, each gradient of
    its own mini-batch."""
    import torch

    torch.manual_seed(seed)
    x, y = digits_tensors()
    model = _models()[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    out = []
    for step in range(steps + workers):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        if step < steps:
            opt.step()
        else:
            out.append([(n, p.grad.detach().numpy().copy())
                        for n, p in model.named_parameters()])
    return out
