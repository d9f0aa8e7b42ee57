"""Ray Data into a training loop: iter_torch_batches with
torchbridge.ray.CollateFn (Ray 2.47+'s NumpyBatchCollateFn): float64 columns
arrive as float32, read-only object-store buffers are copied once (never
aliased writable), and on a GPU all columns move in one transfer.

    python examples/ray_data.py --rows 4096
"""

import argparse

import numpy as np
import ray
import torch

from torchbridge.ray import CollateFn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        rng = np.random.default_rng(0)
        x = rng.random((args.rows, 8))                       # float64 features
        y = (x.sum(axis=1) > 4).astype(np.int64)              # a learnable label
        ds = ray.data.from_items([{"x": x[i], "y": y[i]} for i in range(args.rows)])

        torch.manual_seed(0)
        model = torch.nn.Linear(8, 2).to(args.device)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        collate = CollateFn(device=args.device)  # the same device as below
        for epoch in range(3):
            correct = seen = 0
            for batch in ds.iter_torch_batches(batch_size=args.batch_size,
                                               collate_fn=collate, device=args.device):
                logits = model(batch["x"] - 0.5)
                loss = torch.nn.functional.cross_entropy(logits, batch["y"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                correct += (logits.argmax(1) == batch["y"]).sum().item()
                seen += len(batch["y"])
            print(f"epoch {epoch}: loss {loss.item():.4f} accuracy {correct / seen:.3f}")
        print(f"ray_data: ok, x dtype {batch['x'].dtype}, device {batch['x'].device.type}, "
              f"rows {seen}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
