"""A DataLoader training loop with torchbridge: collate_fn=tb.collate (one
copy per batch, float64 -> float32 on the way, shared memory in workers)
and tb.prefetch (batches moved to the device ahead of the model, one
coalesced transfer each on a side stream).

    python examples/dataloader_training.py --samples 2048 --workers 2
"""

import argparse

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import torchbridge as tb


class Shapes(Dataset):
    """float64 images (as NumPy code makes them) and an int label: the mean
    brightness decides the class, so a small model can learn it."""

    def __init__(self, n: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, n)
        self.images = rng.random((n, 3, 16, 16)) * 0.5 + self.labels[:, None, None, None] * 0.5

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": int(self.labels[i]), "id": f"img{i}"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    torch.manual_seed(0)
    loader = DataLoader(Shapes(args.samples), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, collate_fn=tb.collate,
                        persistent_workers=args.workers > 0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    model.to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(args.epochs):
        total, correct, seen = 0.0, 0, 0
        for batch in tb.prefetch(loader, args.device):
            # batch["image"]: float32 on the device; batch["id"]: a list of str
            logits = model(batch["image"] - 0.5)
            loss = torch.nn.functional.cross_entropy(logits, batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch["id"])
            correct += (logits.argmax(1) == batch["label"]).sum().item()
            seen += len(batch["id"])
        print(f"epoch {epoch}: loss {total / seen:.4f} accuracy {correct / seen:.3f}")
    print(f"dataloader_training: ok, image dtype {batch['image'].dtype}, "
          f"device {batch['image'].device.type}, accuracy {correct / seen:.3f}")


if __name__ == "__main__":
    main()
