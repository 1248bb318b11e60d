"""Segment a directory of images with unetc on Ray Data: each worker loads the model once.

    python examples/ray_segment.py SPEC WEIGHTS IMAGES_DIR OUT_DIR [--workers 2] [--address auto]

writes OUT_DIR/<stem>.npy (probabilities, 1 x H x W x K float32) for every .png/.tif in IMAGES_DIR,
the files `unetc run SPEC --weights WEIGHTS --input IMAGES_DIR -o OUT_DIR` writes when OUT_DIR
ends in .npy. Without --address a local Ray instance is started; `--address auto` (or
ray://host:10001) joins a running cluster, where the same code runs on every node that has
unetc installed and can read the paths.
"""

import argparse
import os
import time

import numpy as np
import ray

import unetc


class Segment:
    """A Ray Data UDF: the unetc model is compiled and its weights bound once per worker."""

    def __init__(self, spec, weights, out_dir, device="cpu"):
        self.model = unetc.Model(spec, weights, device=device)
        self.out_dir = out_dir

    def __call__(self, batch):
        written = []
        for image, path in zip(batch["image"], batch["path"]):
            x = to_model_input(image)
            # A batch of one, as `unetc run` writes an image's probabilities.
            probabilities = self.model.predict_large(x[None])
            stem = os.path.splitext(os.path.basename(path))[0]
            out = os.path.join(self.out_dir, stem + ".npy")
            np.save(out, probabilities)
            written.append(out)
        return {"path": np.array(batch["path"]), "output": np.array(written)}


def to_model_input(image):
    """An image array as `unetc run` reads the file: H x W x C float32, 8-bit samples / 255,
    16-bit / 65535 (a gray image, H x W, gets its channel axis)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype == np.uint8:
        scale = np.float32(255)
    elif image.dtype == np.uint16:
        scale = np.float32(65535)
    else:
        raise ValueError(f"images are 8- or 16-bit, not {image.dtype}")
    return image.astype(np.float32) / scale


def segment_directory(spec, weights, images, out_dir, workers=2, cpus_per_worker=1, device="cpu"):
    """Runs the model over every image in `images` with `workers` Ray actors of
    `cpus_per_worker` CPUs each (unetc's thread pool is sized to match); returns the outputs
    written."""
    os.makedirs(out_dir, exist_ok=True)
    ds = ray.data.read_images(images, include_paths=True, file_extensions=["png", "tif", "tiff"])
    results = ds.map_batches(
        Segment,
        fn_constructor_args=(os.path.abspath(spec), os.path.abspath(weights), os.path.abspath(out_dir), device),
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=4,
        num_cpus=cpus_per_worker,
        num_gpus=1 if device == "cuda" else 0,
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(cpus_per_worker)}},
    )
    return sorted(row["output"] for row in results.take_all())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec")
    p.add_argument("weights")
    p.add_argument("images")
    p.add_argument("out_dir")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--address", default=None, help="a running Ray cluster (default: start one here)")
    args = p.parse_args()
    start = time.perf_counter()
    if args.address is None:
        # A local instance: the reading tasks need a CPU beside the workers' (else on a 2-core
        # machine 2 workers hold both and the reads never start).
        cpus = max(os.cpu_count() or 1, args.workers * args.cpus_per_worker + 1)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    started = time.perf_counter()
    written = segment_directory(args.spec, args.weights, args.images, args.out_dir, args.workers, args.cpus_per_worker, args.device)
    done = time.perf_counter()
    print(f"{len(written)} outputs written to {args.out_dir}; ray.init {started - start:.1f} s, segmentation {done - started:.1f} s")


if __name__ == "__main__":
    main()
