"""NIfTI-1 fixtures for tests/nifti.rs, written by nibabel (pip install nibabel numpy).

Each `NAME.nii[.gz]` comes with `NAME.expected.npy`: nibabel's scaled data (get_fdata, scl_slope
and scl_inter applied) in unetc's order, `np.transpose(data, (2, 1, 0, 3))`, i.e. (D, H, W, C) =
(k, j, i, t), float32. Run from the repository root: python3 tests/nifti/generate.py
"""

import os

import nibabel as nib
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(7)
affine = np.array(
    [[0.9, 0.1, 0.0, -90.0], [0.0, 1.1, 0.2, -126.0], [0.05, 0.0, 1.5, -72.0], [0, 0, 0, 1]]
)


def save(name, data, dtype, big_endian=False):
    # Float data saved as an integer dtype: nibabel picks scl_slope and scl_inter itself.
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(dtype)
    if big_endian:
        img = nib.Nifti1Image(
            data.astype(np.dtype(dtype).newbyteorder(">")),
            affine,
            header=img.header.as_byteswapped(">"),
        )
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    path = os.path.join(HERE, name)
    nib.save(img, path)
    back = nib.load(path)
    data = np.asarray(back.get_fdata(dtype=np.float64))
    if data.ndim == 3:
        data = data[..., None]
    np.save(
        os.path.join(HERE, name.split(".")[0] + ".expected.npy"),
        np.ascontiguousarray(np.transpose(data, (2, 1, 0, 3))).astype(np.float32),
    )


# (i, j, k) = (W, H, D) = (11, 10, 9)
save("u8.nii", rng.random((11, 10, 9)) * 40.0 - 7.0, np.uint8)
save("i16_2ch.nii.gz", rng.integers(-3000, 3000, (11, 10, 9, 2)).astype(np.int16), np.int16)
save("i32.nii", rng.standard_normal((11, 10, 9)) * 1e3, np.int32)
save("f32.nii.gz", rng.random((11, 10, 9)), np.float32)
save("f64_be.nii", rng.standard_normal((11, 10, 9)), np.float64, big_endian=True)
