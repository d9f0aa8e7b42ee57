"""Lightning: one line moves every batch (dicts, lists, NumPy leaves
included, which Lightning's own move_data_to_device leaves on the host) in
one coalesced transfer: transfer_batch_to_device -> tb.tree_to_tensor.

    python examples/lightning_transfer.py --samples 512
"""

import argparse

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import torchbridge as tb


class Points(Dataset):
    def __init__(self, n):
        rng = np.random.default_rng(0)
        self.x = rng.random((n, 4))
        self.y = (self.x[:, 0] > 0.5).astype(np.int64)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Model(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 2)
        self.losses = []

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return tb.tree_to_tensor(batch, device=device)  # the one-liner

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.cross_entropy(self.net(batch["x"] - 0.5), batch["y"])
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()

    torch.manual_seed(0)
    model = Model()
    trainer = L.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        accelerator="auto", devices=1)
    loader = DataLoader(Points(args.samples), batch_size=64, shuffle=True,
                        collate_fn=tb.collate)
    trainer.fit(model, loader)
    print(f"lightning_transfer: ok, steps {len(model.losses)}, "
          f"first loss {model.losses[0]:.4f}, last loss {model.losses[-1]:.4f}")


if __name__ == "__main__":
    main()
