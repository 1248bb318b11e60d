"""Segment a directory of images with unetc on Dask: one model per partition of files.

    python examples/dask_segment.py SPEC WEIGHTS IMAGES_DIR OUT_DIR [--partitions 2]

writes OUT_DIR/<stem>.npy (probabilities, 1 x H x W x K float32) for every .png/.tif in
IMAGES_DIR, as `unetc run` does. With the default (local processes) scheduler; on a cluster,
create a `dask.distributed.Client(address)` first and the same bag runs on its workers.
"""

import argparse
import os

import dask.bag as db
import numpy as np
from PIL import Image

import unetc


def segment_partition(paths, spec, weights, out_dir):
    """Loads the model once for this partition's files and writes one .npy per file."""
    model = unetc.Model(spec, weights)
    written = []
    for path in paths:
        image = np.asarray(Image.open(path))
        if image.ndim == 2:
            image = image[:, :, None]
        scale = np.float32(255 if image.dtype == np.uint8 else 65535)
        x = image.astype(np.float32) / scale
        out = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".npy")
        np.save(out, model.predict_large(x[None]))
        written.append(out)
    return written


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("weights")
    p.add_argument("images")
    p.add_argument("out_dir")
    p.add_argument("--partitions", type=int, default=2)
    args = p.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    paths = sorted(
        os.path.join(args.images, f)
        for f in os.listdir(args.images)
        if f.lower().endswith((".png", ".tif", ".tiff"))
    )
    bag = db.from_sequence(paths, npartitions=min(args.partitions, max(len(paths), 1)))
    written = bag.map_partitions(
        segment_partition,
        os.path.abspath(args.spec),
        os.path.abspath(args.weights),
        os.path.abspath(args.out_dir),
    ).compute(scheduler="processes")
    print(f"{len(written)} outputs written to {args.out_dir}")


if __name__ == "__main__":
    main()
