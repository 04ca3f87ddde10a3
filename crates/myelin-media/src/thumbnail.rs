//! Thumbnails for `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
//! (<https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid>)
//! and for the sizes pre-generated on upload.
//!
//! Pure: bytes in, bytes out. No I/O, no async; a 12-megapixel JPEG costs
//! tens of milliseconds of CPU, so the caller runs this on a blocking thread
//! and bounds how many run at once (each may hold up to
//! [`ThumbnailLimits::max_source_pixels`] decoded pixels).
//!
//! Untrusted input is handled in this order:
//! 1. the format is sniffed from the bytes (the declared content type is not
//!    trusted) and must be PNG, JPEG, GIF or WebP;
//! 2. the header dimensions alone are read and refused above
//!    [`ThumbnailLimits::max_source_pixels`] — a decompression bomb declares
//!    huge dimensions in a tiny body, and is refused before any pixel buffer
//!    exists;
//! 3. the decoder runs under [`image::Limits`] (largest side, total
//!    allocation) as a second guard, for what the header does not tell (a GIF
//!    frame larger than its logical screen, 16-bit samples);
//! 4. animations are decoded frame by frame, each frame resized and encoded
//!    before the next is decoded, under a frame count and a total pixel cap.
//!
//! Output: JPEG (quality 80) for JPEG sources, PNG for the others (keeps
//! transparency), and an animated GIF when an animation was asked for and the
//! source is an animated GIF or WebP. Animated WebP output would be smaller,
//! but `image` (through `image-webp`) only encodes lossless still WebP, so
//! GIF is the only animated format we can write. Metadata (EXIF, ICC) is
//! dropped; the EXIF orientation of the source is applied to the pixels.

use std::io::Cursor;

use fast_image_resize as fr;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::codecs::webp::WebPDecoder;
use image::error::ImageError;
use image::metadata::{LoopCount, Orientation};
use image::{
    AnimationDecoder, DynamicImage, Frame, ImageBuffer, ImageDecoder, ImageEncoder, ImageFormat,
    ImageReader, Limits,
};

/// How a thumbnail fills the requested box (the spec's `method` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// Fit within the box, keeping the aspect ratio.
    Scale,
    /// Fill the box exactly, cropping the overflow around the centre.
    Crop,
}

impl Method {
    /// Parses the spec's `method` query value.
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "scale" => Some(Method::Scale),
            "crop" => Some(Method::Crop),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Scale => "scale",
            Method::Crop => "crop",
        }
    }
}

/// Sizes generated on upload, as suggested by the spec's thumbnail section.
pub const PREGENERATED: &[(u32, u32, Method)] = &[
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// Resource limits for one thumbnail job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThumbnailLimits {
    /// Largest source accepted, in pixels (width × height from the header).
    /// For animations, also the cap on pixels decoded across all frames.
    pub max_source_pixels: u64,
    /// Most frames decoded for an animated thumbnail; longer animations get a
    /// still of their first frame.
    pub max_frames: u32,
    /// Largest width or height a client may ask for.
    pub max_thumbnail_side: u32,
}

impl ThumbnailLimits {
    /// 8192 × 8192: passes 12 MP phone photos and 48–50 MP sensor output
    /// (8000 × 6000, 8160 × 6120) and an 8K square, and bounds the decoded
    /// RGBA8 buffer at 256 MiB. (Synapse's default is 32 MP.)
    pub const MAX_SOURCE_PIXELS_DEFAULT: u64 = 8192 * 8192;
    /// Ten seconds at 50 fps; chat GIFs are far shorter, and the pixel cap
    /// above usually binds first (250 frames of 512 × 512 = 64 MP).
    pub const MAX_FRAMES_DEFAULT: u32 = 500;
    /// Well above the largest pre-generated size (800 × 600) and a 2×
    /// high-DPI variant of it; larger requests should fetch the original.
    pub const MAX_THUMBNAIL_SIDE_DEFAULT: u32 = 2048;
}

impl Default for ThumbnailLimits {
    fn default() -> Self {
        ThumbnailLimits {
            max_source_pixels: Self::MAX_SOURCE_PIXELS_DEFAULT,
            max_frames: Self::MAX_FRAMES_DEFAULT,
            max_thumbnail_side: Self::MAX_THUMBNAIL_SIDE_DEFAULT,
        }
    }
}

/// An encoded thumbnail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    /// `image/jpeg`, `image/png` or `image/gif`.
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
    /// True only for an animated GIF with more than one frame.
    pub animated: bool,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThumbnailError {
    /// Not PNG, JPEG, GIF or WebP, or not decodable as such.
    #[error("unsupported or undecodable image: {0}")]
    Unsupported(String),
    /// The source is larger than the limits allow (or claims to be).
    #[error("image too large to thumbnail: {width}x{height}")]
    TooLarge { width: u32, height: u32 },
    /// The requested size is zero or above `max_thumbnail_side`.
    #[error("invalid thumbnail size {width}x{height}")]
    InvalidSize { width: u32, height: u32 },
    /// Encoding the result failed: a bug, not bad input.
    #[error("thumbnail encoding failed: {0}")]
    Encode(String),
}

/// Whether uploads of this content type get thumbnails. Parameters
/// (`; charset=…`) and case are ignored. Only a hint: [`make_thumbnail`]
/// sniffs the real format from the bytes.
pub fn thumbnailable(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    ["image/png", "image/jpeg", "image/gif", "image/webp"]
        .iter()
        .any(|t| essence.eq_ignore_ascii_case(t))
}

/// The source's width and height from its header alone, without decoding
/// pixels (before EXIF orientation is applied).
pub fn dimensions(source: &[u8]) -> Result<(u32, u32), ThumbnailError> {
    probe(source).map(|(_, w, h)| (w, h))
}

/// One thumbnail of `source`; see [`make_thumbnails`].
pub fn make_thumbnail(
    source: &[u8],
    width: u32,
    height: u32,
    method: Method,
    animated: bool,
    limits: &ThumbnailLimits,
) -> Result<Thumbnail, ThumbnailError> {
    let mut thumbnails = make_thumbnails(source, &[(width, height, method)], animated, limits)?;
    thumbnails
        .pop()
        .ok_or_else(|| ThumbnailError::Encode("no thumbnail produced".to_owned()))
}

/// Thumbnails of `source` at each of `sizes`, in order, decoding the source
/// once (for [`PREGENERATED`] on upload).
///
/// Never upscales: `Scale` fits within the box and within the source; `Crop`
/// is exactly the box when the source covers it, and otherwise the largest
/// centred region of the source with the box's aspect ratio, unscaled.
/// With `animated`, an animated GIF or WebP source gives animated GIFs;
/// otherwise (or when the animation is over the frame limits) the result is a
/// still of the first frame.
pub fn make_thumbnails(
    source: &[u8],
    sizes: &[(u32, u32, Method)],
    animated: bool,
    limits: &ThumbnailLimits,
) -> Result<Vec<Thumbnail>, ThumbnailError> {
    for &(width, height, _) in sizes {
        if width == 0
            || height == 0
            || width > limits.max_thumbnail_side
            || height > limits.max_thumbnail_side
        {
            return Err(ThumbnailError::InvalidSize { width, height });
        }
    }
    let (format, width, height) = probe(source)?;
    if u64::from(width) * u64::from(height) > limits.max_source_pixels {
        return Err(ThumbnailError::TooLarge { width, height });
    }
    if animated
        && matches!(format, ImageFormat::Gif | ImageFormat::WebP)
        && let Some(thumbnails) = animated_thumbnails(source, format, width, height, sizes, limits)?
    {
        return Ok(thumbnails);
    }
    let image = decode_still(source, format, width, height, limits)?;
    let mut resizer = fr::Resizer::new();
    sizes
        .iter()
        .map(|&(w, h, method)| {
            let plan = Plan::new(image.width(), image.height(), w, h, method);
            let thumb = resize(&mut resizer, &image, &plan)?;
            let (bytes, content_type) = encode_still(&thumb, format == ImageFormat::Jpeg)?;
            Ok(Thumbnail {
                bytes,
                content_type,
                width: thumb.width(),
                height: thumb.height(),
                animated: false,
            })
        })
        .collect()
}

/// Sniffs the format and reads the header dimensions; no pixel is decoded.
fn probe(source: &[u8]) -> Result<(ImageFormat, u32, u32), ThumbnailError> {
    let format = image::guess_format(source)
        .map_err(|_| ThumbnailError::Unsupported("unrecognised image format".to_owned()))?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP
    ) {
        return Err(ThumbnailError::Unsupported(format!(
            "{format:?} is not thumbnailed"
        )));
    }
    // No limits here: a header only is read, and a bomb must surface as its
    // dimensions (TooLarge), not as a decoder's allocation error.
    let mut reader = ImageReader::with_format(Cursor::new(source), format);
    reader.no_limits();
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ThumbnailError::Unsupported(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(ThumbnailError::Unsupported("zero-sized image".to_owned()));
    }
    Ok((format, width, height))
}

/// The decoder's own limits: a second guard behind the header check.
fn decoder_limits(limits: &ThumbnailLimits) -> Limits {
    // Every format we decode caps a side at 65535 except PNG (2^31).
    const MAX_SIDE_PX: u32 = 65_535;
    // Eight bytes per pixel leaves room for 16-bit RGBA PNGs and for the
    // coefficient buffers of progressive JPEGs.
    const ALLOC_BYTES_PER_PIXEL: u64 = 8;
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(MAX_SIDE_PX);
    decoder_limits.max_image_height = Some(MAX_SIDE_PX);
    decoder_limits.max_alloc = Some(
        limits
            .max_source_pixels
            .saturating_mul(ALLOC_BYTES_PER_PIXEL),
    );
    decoder_limits
}

fn decode_error(error: ImageError, width: u32, height: u32) -> ThumbnailError {
    match error {
        ImageError::Limits(_) => ThumbnailError::TooLarge { width, height },
        other => ThumbnailError::Unsupported(other.to_string()),
    }
}

/// Decodes the (first frame of the) source as 8-bit samples, upright.
fn decode_still(
    source: &[u8],
    format: ImageFormat,
    width: u32,
    height: u32,
    limits: &ThumbnailLimits,
) -> Result<DynamicImage, ThumbnailError> {
    let mut reader = ImageReader::with_format(Cursor::new(source), format);
    reader.limits(decoder_limits(limits));
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(e, width, height))?;
    // A broken EXIF block must not lose the thumbnail: default to upright.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| decode_error(e, width, height))?;
    image.apply_orientation(orientation);
    Ok(to_8bit(image))
}

/// Thumbnails only need 8-bit samples, and the resizer and encoders then see
/// four pixel layouts only.
fn to_8bit(image: DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => image,
        DynamicImage::ImageLuma16(_) => DynamicImage::ImageLuma8(image.to_luma8()),
        DynamicImage::ImageLumaA16(_) => DynamicImage::ImageLumaA8(image.to_luma_alpha8()),
        other if other.color().has_alpha() => DynamicImage::ImageRgba8(other.to_rgba8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Animated GIFs of an animated source, one per size; `None` when the source
/// has a single frame or is over the frame limits (the caller makes stills).
fn animated_thumbnails(
    source: &[u8],
    format: ImageFormat,
    width: u32,
    height: u32,
    sizes: &[(u32, u32, Method)],
    limits: &ThumbnailLimits,
) -> Result<Option<Vec<Thumbnail>>, ThumbnailError> {
    let err = |e| decode_error(e, width, height);
    let (frames, loop_count) = match format {
        ImageFormat::Gif => {
            let mut decoder = GifDecoder::new(Cursor::new(source)).map_err(err)?;
            decoder.set_limits(decoder_limits(limits)).map_err(err)?;
            let loop_count = decoder.loop_count();
            (decoder.into_frames(), loop_count)
        }
        ImageFormat::WebP => {
            let mut decoder = WebPDecoder::new(Cursor::new(source)).map_err(err)?;
            if !decoder.has_animation() {
                return Ok(None);
            }
            decoder.set_limits(decoder_limits(limits)).map_err(err)?;
            let loop_count = decoder.loop_count();
            (decoder.into_frames(), loop_count)
        }
        _ => return Ok(None),
    };
    let repeat = match loop_count {
        LoopCount::Infinite => Repeat::Infinite,
        LoopCount::Finite(n) => Repeat::Finite(u16::try_from(n.get()).unwrap_or(u16::MAX)),
    };
    // Every frame is a full canvas, so the total pixel cap is a frame cap.
    let canvas_pixels = u64::from(width) * u64::from(height);
    let max_frames = u64::from(limits.max_frames).min(limits.max_source_pixels / canvas_pixels);

    // Quantisation speed 10 is the `gif` crate's recommended trade-off; 1
    // (image's default) is several times slower for little visible gain.
    const GIF_SPEED: i32 = 10;
    let mut outputs: Vec<Vec<u8>> = vec![Vec::new(); sizes.len()];
    let mut encoders = Vec::with_capacity(sizes.len());
    for output in &mut outputs {
        let mut encoder = GifEncoder::new_with_speed(output, GIF_SPEED);
        encoder
            .set_repeat(repeat)
            .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        encoders.push(encoder);
    }
    let mut out_sizes = vec![(0, 0); sizes.len()];
    let mut resizer = fr::Resizer::new();
    let mut count: u64 = 0;
    for frame in frames {
        let frame = match frame {
            Ok(frame) => frame,
            Err(ImageError::Limits(_)) => return Err(ThumbnailError::TooLarge { width, height }),
            Err(e) if count == 0 => return Err(ThumbnailError::Unsupported(e.to_string())),
            // Browsers show the frames before a broken one; so do we.
            Err(_) => break,
        };
        count += 1;
        if count > max_frames {
            return Ok(None);
        }
        let delay = frame.delay();
        let canvas = DynamicImage::ImageRgba8(frame.into_buffer());
        for ((encoder, out_size), &(w, h, method)) in
            encoders.iter_mut().zip(&mut out_sizes).zip(sizes)
        {
            let plan = Plan::new(canvas.width(), canvas.height(), w, h, method);
            let thumb = resize(&mut resizer, &canvas, &plan)?.into_rgba8();
            if count > 1 && *out_size != thumb.dimensions() {
                return Err(ThumbnailError::Unsupported(
                    "animation frames differ in size".to_owned(),
                ));
            }
            *out_size = thumb.dimensions();
            encoder
                .encode_frame(Frame::from_parts(thumb, 0, 0, delay))
                .map_err(|e| ThumbnailError::Encode(e.to_string()))?;
        }
    }
    if count < 2 {
        return Ok(None);
    }
    // Dropping an encoder writes the GIF trailer.
    drop(encoders);
    let thumbnails = outputs
        .into_iter()
        .zip(out_sizes)
        .map(|(bytes, (width, height))| Thumbnail {
            bytes,
            content_type: "image/gif",
            width,
            height,
            animated: true,
        })
        .collect();
    Ok(Some(thumbnails))
}

/// Which region of the source becomes a thumbnail of which size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    crop_x: u32,
    crop_y: u32,
    crop_width: u32,
    crop_height: u32,
    out_width: u32,
    out_height: u32,
}

impl Plan {
    /// `source_*` and `box_*` are non-zero (checked by the callers).
    fn new(source_w: u32, source_h: u32, box_w: u32, box_h: u32, method: Method) -> Plan {
        let (sw, sh, bw, bh) = (
            u64::from(source_w),
            u64::from(source_h),
            u64::from(box_w),
            u64::from(box_h),
        );
        // Compares the aspect ratios without division: true when the source
        // is taller, relative to its width, than the box.
        let source_taller = sw * bh <= sh * bw;
        match method {
            Method::Scale => {
                let (out_w, out_h) = if source_taller {
                    let out_h = bh.min(sh);
                    (div_round(sw * out_h, sh).clamp(1, bw.min(sw)), out_h)
                } else {
                    let out_w = bw.min(sw);
                    (out_w, div_round(sh * out_w, sw).clamp(1, bh.min(sh)))
                };
                Plan {
                    crop_x: 0,
                    crop_y: 0,
                    crop_width: source_w,
                    crop_height: source_h,
                    out_width: narrow(out_w),
                    out_height: narrow(out_h),
                }
            }
            Method::Crop => {
                // The largest centred region with the box's aspect ratio.
                let (crop_w, crop_h) = if source_taller {
                    (sw, div_round(sw * bh, bw).clamp(1, sh))
                } else {
                    (div_round(sh * bw, bh).clamp(1, sw), sh)
                };
                // Scaled down to the box when it covers the box; otherwise
                // returned as is, as upscaling adds no detail.
                let (out_w, out_h) = if crop_w >= bw && crop_h >= bh {
                    (bw, bh)
                } else {
                    (crop_w.min(bw), crop_h.min(bh))
                };
                Plan {
                    crop_x: narrow((sw - crop_w) / 2),
                    crop_y: narrow((sh - crop_h) / 2),
                    crop_width: narrow(crop_w),
                    crop_height: narrow(crop_h),
                    out_width: narrow(out_w),
                    out_height: narrow(out_h),
                }
            }
        }
    }
}

fn div_round(numerator: u64, denominator: u64) -> u64 {
    (numerator + denominator / 2) / denominator
}

/// Every value narrowed is at most a source or box side, both `u32`.
fn narrow(value: u64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Applies `plan` to an 8-bit image (see [`to_8bit`]).
///
/// `fast_image_resize` (SIMD convolution, alpha premultiplied so transparent
/// edges do not darken) rather than `image::imageops`: see the bench
/// `benches/benches/thumbnail.rs` for the difference.
fn resize(
    resizer: &mut fr::Resizer,
    image: &DynamicImage,
    plan: &Plan,
) -> Result<DynamicImage, ThumbnailError> {
    if (plan.out_width, plan.out_height) == (plan.crop_width, plan.crop_height) {
        return Ok(image.crop_imm(plan.crop_x, plan.crop_y, plan.crop_width, plan.crop_height));
    }
    let pixel_type = match image {
        DynamicImage::ImageLuma8(_) => fr::PixelType::U8,
        DynamicImage::ImageLumaA8(_) => fr::PixelType::U8x2,
        DynamicImage::ImageRgb8(_) => fr::PixelType::U8x3,
        DynamicImage::ImageRgba8(_) => fr::PixelType::U8x4,
        other => {
            return Err(ThumbnailError::Encode(format!(
                "unexpected pixel layout {:?}",
                other.color()
            )));
        }
    };
    let internal = |e: &dyn std::fmt::Display| ThumbnailError::Encode(e.to_string());
    let src =
        fr::images::ImageRef::new(image.width(), image.height(), image.as_bytes(), pixel_type)
            .map_err(|e| internal(&e))?;
    let mut dst = fr::images::Image::new(plan.out_width, plan.out_height, pixel_type);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .crop(
            f64::from(plan.crop_x),
            f64::from(plan.crop_y),
            f64::from(plan.crop_width),
            f64::from(plan.crop_height),
        );
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| internal(&e))?;
    let (w, h, pixels) = (dst.width(), dst.height(), dst.into_vec());
    let resized = match pixel_type {
        fr::PixelType::U8 => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8),
        fr::PixelType::U8x2 => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageLumaA8),
        fr::PixelType::U8x3 => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8),
        _ => ImageBuffer::from_raw(w, h, pixels).map(DynamicImage::ImageRgba8),
    };
    resized.ok_or_else(|| ThumbnailError::Encode("resized buffer has the wrong size".to_owned()))
}

/// JPEG (quality 80) for JPEG sources, PNG otherwise.
fn encode_still(
    image: &DynamicImage,
    jpeg: bool,
) -> Result<(Vec<u8>, &'static str), ThumbnailError> {
    const JPEG_QUALITY: u8 = 80;
    let internal = |e: ImageError| ThumbnailError::Encode(e.to_string());
    let mut bytes = Vec::new();
    if jpeg {
        // JPEG sources decode to grey or RGB; anything else is converted.
        let converted;
        let image = match image {
            DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image,
            other => {
                converted = DynamicImage::ImageRgb8(other.to_rgb8());
                &converted
            }
        };
        JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
            .encode(
                image.as_bytes(),
                image.width(),
                image.height(),
                image.color().into(),
            )
            .map_err(internal)?;
        Ok((bytes, "image/jpeg"))
    } else {
        // Thumbnails are encoded once and served many times: spend the CPU
        // on the smaller file.
        PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, PngFilter::Adaptive)
            .write_image(
                image.as_bytes(),
                image.width(),
                image.height(),
                image.color().into(),
            )
            .map_err(internal)?;
        Ok((bytes, "image/png"))
    }
}
