"""Re-embedding throughput (texts/s) of the Embedder backends on this machine, with agreement to fp32.

    .venv/bin/python benchmarks/embed_speed.py [--data ../shared/data/dev] [--texts 512] [--batch-sizes 32,64,128]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from content_data import DEFAULT_DATA, load

from auditor.embedder import Embedder, bf16_supported, clear_encoding_cache


def timed(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, float]:
    embedder.encode(texts[:16])  # load and warm up outside the timing
    clear_encoding_cache()  # time the model, not the per-process cache of encoded texts
    t0 = time.perf_counter()
    out = embedder.encode(texts)
    return out, len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--batch-sizes", default="32,64,128")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    texts = [r["text"] for r in load(args.data / "corpora" / "wikipedia_vital_en_even.jsonl")[: args.texts]]
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"## Embedding speed — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), device {device}, bf16 hardware: "
          f"{bf16_supported(device)}; {len(texts)} Wikipedia lead paragraphs, all-MiniLM-L6-v2.\n")
    print("| backend | batch | texts/s | min cosine to fp32 | used by `auto` |\n|---|---:|---:|---:|---|")
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        ref, speed = timed(Embedder(device=device, batch_size=bs, precision="fp32"), texts)
        auto = Embedder(device=device, batch_size=bs)
        auto.encode(texts[:2])
        print(f"| fp32 | {bs} | {speed:.0f} | 1.0000 | {'yes' if auto.active_precision == 'fp32' else 'no'} |")
        bf16 = Embedder(device=device, batch_size=bs, precision="bf16")
        out, speed = timed(bf16, texts)
        agree = float(np.min(np.sum(ref * out, axis=1)))
        print(f"| bf16 autocast | {bs} | {speed:.0f} | {agree:.5f} | "
              f"{'yes' if auto.active_precision == 'bf16' else 'no'} |")


if __name__ == "__main__":
    main()
