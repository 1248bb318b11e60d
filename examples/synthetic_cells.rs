//! Writes a small synthetic segmentation data set for `unetc train` (README "Training: a worked
//! example"): gray 64x64 images of bright, blurred, noisy ellipses ("cells") on an uneven
//! background, and 0/255 masks of the ellipses, in `DIR/train/{images,masks}` and
//! `DIR/val/{images,masks}`. Deterministic (a fixed seed), no download.
//!
//!     cargo run --release --example synthetic_cells -- data/cells [train count] [val count]

use image::{GrayImage, Luma};
use rand::{RngExt, SeedableRng};
use std::path::Path;

const SIZE: u32 = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map(String::as_str).unwrap_or("data/cells"));
    let train: usize = args.get(2).map_or(Ok(48), |v| v.parse())?;
    let val: usize = args.get(3).map_or(Ok(16), |v| v.parse())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2015);
    for (split, count) in [("train", train), ("val", val)] {
        let images = dir.join(split).join("images");
        let masks = dir.join(split).join("masks");
        std::fs::create_dir_all(&images)?;
        std::fs::create_dir_all(&masks)?;
        for i in 0..count {
            let (image, mask) = cells(&mut rng);
            image.save(images.join(format!("cell_{i:03}.png")))?;
            mask.save(masks.join(format!("cell_{i:03}.png")))?;
        }
    }
    println!(
        "wrote {train} training and {val} validation images to {}",
        dir.display()
    );
    Ok(())
}

/// One image and its mask.
fn cells(rng: &mut rand::rngs::StdRng) -> (GrayImage, GrayImage) {
    let n = SIZE as usize;
    let mut inside = vec![false; n * n];
    let mut brightness = vec![0.0f32; n * n];
    for _ in 0..rng.random_range(3..8) {
        let (cx, cy) = (
            rng.random_range(6.0..58.0f32),
            rng.random_range(6.0..58.0f32),
        );
        let (a, b) = (rng.random_range(3.0..9.0f32), rng.random_range(3.0..9.0f32));
        let angle = rng.random_range(0.0..std::f32::consts::PI);
        let level = rng.random_range(0.35..0.8f32);
        let (s, c) = angle.sin_cos();
        for y in 0..n {
            for x in 0..n {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
                if (u / a).powi(2) + (v / b).powi(2) <= 1.0 {
                    inside[y * n + x] = true;
                    brightness[y * n + x] = brightness[y * n + x].max(level);
                }
            }
        }
    }
    // A soft edge (3x3 box blur), an uneven background and noise.
    let (gx, gy) = (
        rng.random_range(-0.15..0.15f32),
        rng.random_range(-0.15..0.15f32),
    );
    let mut image = GrayImage::new(SIZE, SIZE);
    let mut mask = GrayImage::new(SIZE, SIZE);
    for y in 0..n {
        for x in 0..n {
            let mut sum = 0.0;
            let mut count = 0.0;
            for (yy, xx) in [
                (y as i64 - 1, x as i64),
                (y as i64 + 1, x as i64),
                (y as i64, x as i64 - 1),
                (y as i64, x as i64 + 1),
                (y as i64, x as i64),
            ] {
                if (0..n as i64).contains(&yy) && (0..n as i64).contains(&xx) {
                    sum += brightness[yy as usize * n + xx as usize];
                    count += 1.0;
                }
            }
            let background =
                0.2 + gx * (x as f32 / n as f32 - 0.5) + gy * (y as f32 / n as f32 - 0.5);
            let noise = rng.random_range(-0.08..0.08f32);
            let value = (background + sum / count + noise).clamp(0.0, 1.0);
            image.put_pixel(x as u32, y as u32, Luma([(value * 255.0).round() as u8]));
            mask.put_pixel(
                x as u32,
                y as u32,
                Luma([if inside[y * n + x] { 255 } else { 0 }]),
            );
        }
    }
    (image, mask)
}
