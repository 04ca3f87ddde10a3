//! Thumbnail generation on images built in memory: sizes per method,
//! formats, animation, and refusal of bombs and garbage.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::{
    AnimationDecoder, DynamicImage, Frame, ImageEncoder, ImageFormat, Rgb, RgbImage, Rgba,
    RgbaImage,
};
use myelin_media::thumbnail::{
    Method, PREGENERATED, Thumbnail, ThumbnailError, ThumbnailLimits, dimensions, make_thumbnail,
    make_thumbnails, thumbnailable,
};

const RED: Rgba<u8> = Rgba([255, 0, 0, 255]);
const GREEN: Rgba<u8> = Rgba([0, 255, 0, 255]);
const BLUE: Rgba<u8> = Rgba([0, 0, 255, 255]);

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A photo-like RGB image: gradients plus deterministic noise, so encoders
/// and resizers do real work.
fn photo(width: u32, height: u32) -> RgbImage {
    let mut state: u32 = 0x9e37_79b9;
    RgbImage::from_fn(width, height, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state & 0x1f) as u8;
        Rgb([
            ((x * 255 / width) as u8).saturating_add(noise),
            ((y * 255 / height) as u8).saturating_add(noise),
            (((x + y) * 127 / (width + height)) as u8).saturating_add(noise),
        ])
    })
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(
        DynamicImage::ImageRgb8(photo(width, height)),
        ImageFormat::Jpeg,
    )
}

/// Opaque on the left half, fully transparent on the right.
fn png_with_alpha(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, _| {
        if x < width / 2 {
            Rgba([200, 100, 50, 255])
        } else {
            Rgba([0, 0, 0, 0])
        }
    });
    encode(DynamicImage::ImageRgba8(image), ImageFormat::Png)
}

fn animated_gif(width: u32, height: u32, colours: &[Rgba<u8>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for &colour in colours {
            let frame = Frame::from_parts(
                RgbaImage::from_pixel(width, height, colour),
                0,
                0,
                image::Delay::from_numer_denom_ms(100, 1),
            );
            encoder.encode_frame(frame).unwrap();
        }
    }
    bytes
}

fn thumb(source: &[u8], width: u32, height: u32, method: Method) -> Thumbnail {
    make_thumbnail(
        source,
        width,
        height,
        method,
        false,
        &ThumbnailLimits::default(),
    )
    .unwrap()
}

/// Decodes a thumbnail, checking that its bytes match its metadata.
fn decode(thumbnail: &Thumbnail) -> DynamicImage {
    let format = image::guess_format(&thumbnail.bytes).unwrap();
    assert_eq!(format.to_mime_type(), thumbnail.content_type);
    let image = image::load_from_memory(&thumbnail.bytes).unwrap();
    assert_eq!(
        (image.width(), image.height()),
        (thumbnail.width, thumbnail.height)
    );
    image
}

fn size(thumbnail: &Thumbnail) -> (u32, u32) {
    (thumbnail.width, thumbnail.height)
}

fn assert_near(actual: Rgba<u8>, expected: Rgba<u8>) {
    let close = actual
        .0
        .iter()
        .zip(expected.0)
        .all(|(&a, e)| a.abs_diff(e) <= 24);
    assert!(close, "{actual:?} is not close to {expected:?}");
}

// --- sizes ---------------------------------------------------------------

#[test]
fn scale_fits_within_the_box_keeping_aspect_ratio() {
    let landscape = jpeg(400, 200);
    assert_eq!(size(&thumb(&landscape, 100, 100, Method::Scale)), (100, 50));
    assert_eq!(
        size(&thumb(&landscape, 320, 240, Method::Scale)),
        (320, 160)
    );
    let portrait = jpeg(300, 600);
    assert_eq!(size(&thumb(&portrait, 320, 240, Method::Scale)), (120, 240));
    assert_eq!(size(&thumb(&portrait, 96, 96, Method::Scale)), (48, 96));
}

#[test]
fn scale_never_upscales() {
    let small = jpeg(50, 30);
    assert_eq!(size(&thumb(&small, 800, 600, Method::Scale)), (50, 30));
    // Larger than the source in one dimension only: still fits the box.
    assert_eq!(size(&thumb(&small, 800, 15, Method::Scale)), (25, 15));
}

#[test]
fn crop_fills_the_box_exactly() {
    let landscape = jpeg(400, 200);
    assert_eq!(size(&thumb(&landscape, 96, 96, Method::Crop)), (96, 96));
    assert_eq!(size(&thumb(&landscape, 32, 32, Method::Crop)), (32, 32));
    let portrait = jpeg(600, 1000);
    assert_eq!(size(&thumb(&portrait, 320, 240, Method::Crop)), (320, 240));
}

#[test]
fn crop_of_a_smaller_source_keeps_the_aspect_ratio_without_upscaling() {
    let small = jpeg(50, 30);
    assert_eq!(size(&thumb(&small, 96, 96, Method::Crop)), (30, 30));
    // Narrower than the box, tall enough: the largest 4:3 region inside.
    let narrow = jpeg(200, 400);
    assert_eq!(size(&thumb(&narrow, 320, 240, Method::Crop)), (200, 150));
}

#[test]
fn crop_keeps_the_centre() {
    // Thirds: red, green, blue; a square crop keeps the green middle.
    let image = RgbaImage::from_fn(300, 100, |x, _| match x / 100 {
        0 => RED,
        1 => GREEN,
        _ => BLUE,
    });
    let source = encode(DynamicImage::ImageRgba8(image), ImageFormat::Png);
    let out = decode(&thumb(&source, 32, 32, Method::Crop)).to_rgba8();
    for (x, y) in [(16, 16), (3, 16), (28, 16)] {
        assert_near(*out.get_pixel(x, y), GREEN);
    }
}

#[test]
fn every_pregenerated_size_works_on_a_12_megapixel_jpeg() {
    let source = jpeg(4000, 3000);
    assert_eq!(dimensions(&source).unwrap(), (4000, 3000));
    let limits = ThumbnailLimits::default();
    let thumbnails = make_thumbnails(&source, PREGENERATED, false, &limits).unwrap();
    let sizes: Vec<_> = thumbnails.iter().map(size).collect();
    assert_eq!(
        sizes,
        [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600)]
    );
    for thumbnail in &thumbnails {
        assert_eq!(thumbnail.content_type, "image/jpeg");
        assert!(!thumbnail.animated);
        decode(thumbnail);
    }
    // One at a time gives the same result. (Only one: in debug builds the
    // image generics instantiated in this crate run unoptimised, a second
    // per decode.)
    let one = make_thumbnail(&source, 32, 32, Method::Crop, false, &limits).unwrap();
    assert_eq!(one, thumbnails[0]);
}

// --- formats -------------------------------------------------------------

#[test]
fn jpeg_gives_jpeg_and_png_keeps_transparency() {
    let out = thumb(&jpeg(200, 100), 64, 64, Method::Scale);
    assert_eq!(out.content_type, "image/jpeg");
    decode(&out);

    let out = thumb(&png_with_alpha(200, 100), 64, 64, Method::Scale);
    assert_eq!(out.content_type, "image/png");
    assert!(!out.animated);
    let image = decode(&out).to_rgba8();
    assert_eq!(image.dimensions(), (64, 32));
    assert_eq!(image.get_pixel(2, 16).0[3], 255);
    assert_eq!(image.get_pixel(61, 16).0[3], 0);
}

#[test]
fn webp_gives_png() {
    let source = encode(
        DynamicImage::ImageRgba8(RgbaImage::from_pixel(120, 80, BLUE)),
        ImageFormat::WebP,
    );
    let out = thumb(&source, 60, 60, Method::Scale);
    assert_eq!(out.content_type, "image/png");
    assert_eq!(size(&out), (60, 40));
    assert_near(*decode(&out).to_rgba8().get_pixel(30, 20), BLUE);
}

#[test]
fn exif_orientation_is_applied() {
    // A minimal little-endian TIFF block: one IFD entry, Orientation = 6
    // (rotate 90° clockwise to display).
    let exif = [
        b'I', b'I', 0x2a, 0, 8, 0, 0, 0, // header, IFD at offset 8
        1, 0, // one entry
        0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, // Orientation, SHORT, 1, 6
        0, 0, 0, 0, // no next IFD
    ];
    let mut source = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut source, 90);
    encoder.set_exif_metadata(exif.to_vec()).unwrap();
    let pixels = photo(40, 20);
    encoder
        .write_image(pixels.as_raw(), 40, 20, image::ExtendedColorType::Rgb8)
        .unwrap();
    assert_eq!(size(&thumb(&source, 100, 100, Method::Scale)), (20, 40));
}

// --- animation -----------------------------------------------------------

fn gif_frames(bytes: &[u8]) -> Vec<RgbaImage> {
    GifDecoder::new(Cursor::new(bytes))
        .unwrap()
        .into_frames()
        .map(|frame| frame.unwrap().into_buffer())
        .collect()
}

#[test]
fn animated_gif_gives_an_animated_gif_when_asked() {
    let source = animated_gif(200, 100, &[RED, GREEN, BLUE]);
    let limits = ThumbnailLimits::default();
    let out = make_thumbnail(&source, 96, 96, Method::Scale, true, &limits).unwrap();
    assert_eq!(out.content_type, "image/gif");
    assert!(out.animated);
    assert_eq!(size(&out), (96, 48));
    let frames = gif_frames(&out.bytes);
    assert_eq!(frames.len(), 3);
    for (frame, colour) in frames.iter().zip([RED, GREEN, BLUE]) {
        assert_eq!(frame.dimensions(), (96, 48));
        assert_near(*frame.get_pixel(48, 24), colour);
    }

    let crops = make_thumbnails(&source, &[(32, 32, Method::Crop)], true, &limits).unwrap();
    assert_eq!(size(&crops[0]), (32, 32));
    assert_eq!(gif_frames(&crops[0].bytes).len(), 3);
}

#[test]
fn animated_gif_gives_the_first_frame_when_not_asked() {
    let source = animated_gif(200, 100, &[RED, GREEN, BLUE]);
    let out = thumb(&source, 96, 96, Method::Scale);
    assert_eq!(out.content_type, "image/png");
    assert!(!out.animated);
    assert_near(*decode(&out).to_rgba8().get_pixel(48, 24), RED);
}

#[test]
fn animation_over_the_frame_limit_gives_a_still() {
    let source = animated_gif(40, 40, &[RED, GREEN, BLUE]);
    let limits = ThumbnailLimits {
        max_frames: 2,
        ..ThumbnailLimits::default()
    };
    let out = make_thumbnail(&source, 32, 32, Method::Crop, true, &limits).unwrap();
    assert_eq!(out.content_type, "image/png");
    assert!(!out.animated);
    // Same through the total pixel cap: three 40×40 frames are 4800 pixels.
    let limits = ThumbnailLimits {
        max_source_pixels: 4000,
        ..ThumbnailLimits::default()
    };
    let out = make_thumbnail(&source, 32, 32, Method::Crop, true, &limits).unwrap();
    assert!(!out.animated);
}

#[test]
fn stills_stay_still_when_animation_is_asked() {
    let limits = ThumbnailLimits::default();
    let out = make_thumbnail(
        &png_with_alpha(100, 100),
        32,
        32,
        Method::Crop,
        true,
        &limits,
    )
    .unwrap();
    assert_eq!(out.content_type, "image/png");
    assert!(!out.animated);
    let single = animated_gif(100, 100, &[GREEN]);
    let out = make_thumbnail(&single, 32, 32, Method::Crop, true, &limits).unwrap();
    assert_eq!(out.content_type, "image/png");
    assert!(!out.animated);
}

// --- refusals ------------------------------------------------------------

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG of a few dozen bytes whose header declares `width` × `height` RGBA.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, no interlace
    png_chunk(&mut png, b"IHDR", &ihdr);
    // A zlib stream of a few zero bytes: nowhere near the declared size.
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A GIF of `screen` × `screen` pixels whose single frame is `frame` ×
/// `frame`, with almost no image data.
fn gif_bomb(screen: u16, frame: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&screen.to_le_bytes());
    gif.extend_from_slice(&screen.to_le_bytes());
    gif.extend_from_slice(&[0x80, 0, 0]); // global table of 2 colours
    gif.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    gif.push(b','); // image descriptor
    gif.extend_from_slice(&[0, 0, 0, 0]);
    gif.extend_from_slice(&frame.to_le_bytes());
    gif.extend_from_slice(&frame.to_le_bytes());
    gif.push(0);
    gif.extend_from_slice(&[2, 2, 0x4c, 0x01, 0]); // LZW: a pixel or so
    gif.push(b';');
    gif
}

fn assert_refused_quickly(source: &[u8], width: u32, height: u32, animated: bool) {
    let start = Instant::now();
    let result = make_thumbnail(
        source,
        32,
        32,
        Method::Crop,
        animated,
        &ThumbnailLimits::default(),
    );
    assert!(
        matches!(result, Err(ThumbnailError::TooLarge { width: w, height: h }) if (w, h) == (width, height)),
        "{result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn png_bomb_is_refused_from_its_header() {
    let bomb = png_bomb(100_000, 100_000);
    assert!(bomb.len() < 100);
    assert_eq!(dimensions(&bomb).unwrap(), (100_000, 100_000));
    assert_refused_quickly(&bomb, 100_000, 100_000, false);
}

#[test]
fn gif_bomb_is_refused_from_its_header() {
    let bomb = gif_bomb(65_535, 1);
    assert_refused_quickly(&bomb, 65_535, 65_535, false);
    assert_refused_quickly(&bomb, 65_535, 65_535, true);
}

#[test]
fn gif_frame_larger_than_its_screen_is_refused_by_the_decoder_limits() {
    // The header says 16 × 16; the frame claims 65535² (17 GB as RGBA).
    let bomb = gif_bomb(16, 65_535);
    assert_refused_quickly(&bomb, 16, 16, false);
    assert_refused_quickly(&bomb, 16, 16, true);
}

#[test]
fn source_over_the_configured_limit_is_refused() {
    let limits = ThumbnailLimits {
        max_source_pixels: 100 * 100,
        ..ThumbnailLimits::default()
    };
    let result = make_thumbnail(&jpeg(101, 100), 32, 32, Method::Crop, false, &limits);
    assert!(matches!(
        result,
        Err(ThumbnailError::TooLarge {
            width: 101,
            height: 100
        })
    ));
    assert!(make_thumbnail(&jpeg(100, 100), 32, 32, Method::Crop, false, &limits).is_ok());
}

#[test]
fn garbage_is_unsupported() {
    let limits = ThumbnailLimits::default();
    let mut truncated = png_with_alpha(64, 64);
    truncated.truncate(60);
    // Recognised by its magic bytes, but not a format we thumbnail.
    let bmp = b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0".to_vec();
    for source in [
        &b""[..],
        b"not an image at all",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        &truncated,
        &bmp,
    ] {
        let result = make_thumbnail(source, 32, 32, Method::Scale, false, &limits);
        assert!(
            matches!(result, Err(ThumbnailError::Unsupported(_))),
            "{result:?}"
        );
    }
    assert!(matches!(
        dimensions(b"nope"),
        Err(ThumbnailError::Unsupported(_))
    ));
}

#[test]
fn invalid_sizes_are_refused() {
    let source = jpeg(64, 64);
    let limits = ThumbnailLimits::default();
    let side = limits.max_thumbnail_side;
    for (w, h) in [(0, 32), (32, 0), (0, 0), (side + 1, 32), (32, side + 1)] {
        let result = make_thumbnail(&source, w, h, Method::Scale, false, &limits);
        assert!(
            matches!(result, Err(ThumbnailError::InvalidSize { width, height }) if (width, height) == (w, h)),
            "{result:?}"
        );
    }
    // The size is checked before the source is looked at.
    let result = make_thumbnail(b"garbage", 0, 32, Method::Scale, false, &limits);
    assert!(matches!(result, Err(ThumbnailError::InvalidSize { .. })));
}

// --- small API -----------------------------------------------------------

#[test]
fn method_parses_the_spec_values() {
    assert_eq!(Method::parse("scale"), Some(Method::Scale));
    assert_eq!(Method::parse("crop"), Some(Method::Crop));
    assert_eq!(Method::parse("Crop"), None);
    assert_eq!(Method::parse(""), None);
    for method in [Method::Scale, Method::Crop] {
        assert_eq!(Method::parse(method.as_str()), Some(method));
    }
}

#[test]
fn thumbnailable_content_types() {
    for ct in [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "IMAGE/PNG",
        "image/jpeg; q=1",
    ] {
        assert!(thumbnailable(ct), "{ct}");
    }
    for ct in ["image/svg+xml", "image/bmp", "text/plain", "", "image/pngx"] {
        assert!(!thumbnailable(ct), "{ct}");
    }
}

#[test]
fn a_12_megapixel_photo_passes_the_default_limits() {
    let limits = ThumbnailLimits::default();
    assert!(4000 * 3000 <= limits.max_source_pixels);
    assert!(8000 * 6000 <= limits.max_source_pixels);
}
