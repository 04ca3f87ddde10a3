//! Thumbnail generation from a 12-megapixel (4000 × 3000) JPEG, the size of
//! a typical phone photo: decode, resize, encode. Uploads pay for the five
//! pre-generated sizes at once; a thumbnail request for a size not stored
//! pays for one.
//!
//! cargo bench -p myelin-benches --bench thumbnail

use criterion::{Criterion, criterion_group, criterion_main};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use myelin_media::thumbnail::{
    Method, PREGENERATED, ThumbnailLimits, make_thumbnail, make_thumbnails,
};
use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

/// A photo-like 4000 × 3000 JPEG: gradients plus noise, so the encoder,
/// decoder and resizer do the work a real photo asks of them (a flat colour
/// would compress to nothing).
fn photo_jpeg() -> Vec<u8> {
    let (width, height) = (4000u32, 3000u32);
    let mut state: u32 = 0x9e37_79b9;
    let image = RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state & 0x1f) as u8;
        Rgb([
            ((x * 223 / width) as u8).saturating_add(noise),
            ((y * 223 / height) as u8).saturating_add(noise),
            (((x / 40 + y / 30) % 2 * 100 + 60) as u8).saturating_add(noise),
        ])
    });
    let mut bytes = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image)
        .write_to(&mut bytes, ImageFormat::Jpeg)
        .unwrap();
    bytes.into_inner()
}

fn bench_thumbnail(c: &mut Criterion) {
    let source = photo_jpeg();
    let limits = ThumbnailLimits::default();
    let mut group = c.benchmark_group("thumbnail/12mp_jpeg");
    // Each iteration takes tens to hundreds of milliseconds.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));

    group.bench_function("scale_800x600", |b| {
        b.iter(|| {
            make_thumbnail(black_box(&source), 800, 600, Method::Scale, false, &limits).unwrap()
        })
    });
    group.bench_function("crop_32x32", |b| {
        b.iter(|| make_thumbnail(black_box(&source), 32, 32, Method::Crop, false, &limits).unwrap())
    });
    // What an upload does: decode once, five sizes.
    group.bench_function("pregenerated_all5", |b| {
        b.iter(|| make_thumbnails(black_box(&source), PREGENERATED, false, &limits).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_thumbnail);
criterion_main!(benches);
