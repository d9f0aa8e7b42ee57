"""Hugging Face datasets in NumPy format, batched by tb.collate: numeric
columns stacked in one copy as float32/int64, the text column kept as a
list of str (tree_to_tensor would fail on it), no torch formatter copies.

    python examples/hf_datasets.py --rows 1024
"""

import argparse

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

import torchbridge as tb


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()

    rng = np.random.default_rng(0)
    ds = Dataset.from_dict({
        "pixels": rng.random((args.rows, 3, 8, 8)),   # stored as float64 lists
        "label": rng.integers(0, 10, args.rows),
        "caption": [f"image {i}" for i in range(args.rows)],
    }).with_format("numpy")

    loader = DataLoader(ds, batch_size=args.batch_size, collate_fn=tb.collate)
    rows = 0
    for batch in loader:
        assert batch["pixels"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64
        assert isinstance(batch["caption"], list)
        rows += len(batch["caption"])
    print(f"hf_datasets: ok, pixels {tuple(batch['pixels'].shape)} "
          f"{batch['pixels'].dtype}, label {batch['label'].dtype}, "
          f"caption {str(batch['caption'][0])!r}, rows {rows}")


if __name__ == "__main__":
    main()
