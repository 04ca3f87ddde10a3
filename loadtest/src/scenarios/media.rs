//! `media`: one user uploads `count` files of `size-mb` MiB (distinct random
//! bytes, so nothing is deduplicated), one after another, then downloads
//! each: MB/s each way, from the first byte sent to the last received.

use rand::RngCore as _;
use serde_json::json;
use std::time::{Duration, Instant};

use super::{Context, Measurement, prefix, report};
use crate::report::Report;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Size of each file, in MiB.
    #[arg(long, default_value_t = 50)]
    pub size_mb: usize,
    /// Files uploaded (then downloaded), one after another.
    #[arg(long, default_value_t = 3)]
    pub count: usize,
}

pub async fn run(ctx: &Context, args: &Args) -> anyhow::Result<Report> {
    let server = &ctx.server;
    let user = server.register(&format!("{}media", prefix())).await?;
    let size = args.size_mb * 1024 * 1024;
    let count = args.count.max(1);

    let measurement = Measurement::start(ctx);
    let recorder = measurement.recorder.clone();
    recorder.declare("upload", true);
    recorder.declare("download", true);
    let (mut up_time, mut down_time) = (Duration::ZERO, Duration::ZERO);
    let mut uris = Vec::with_capacity(count);
    for _ in 0..count {
        let mut bytes = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut bytes);
        let began = Instant::now();
        let result = server.upload(&user, bytes).await;
        if let Some(uri) = recorder.outcome("upload", began, result) {
            up_time += began.elapsed();
            uris.push(uri);
        }
    }
    let mut downloaded = 0;
    for uri in &uris {
        let began = Instant::now();
        match server.download(&user, uri).await {
            Ok(len) if len == size as u64 => {
                recorder.success("download", began);
                down_time += began.elapsed();
                downloaded += 1;
            }
            Ok(_) => recorder.failure_code("download", "short_body"),
            Err(e) => recorder.failure("download", &e),
        }
    }
    let measured = measurement.stop().await;
    let mb = |files: usize| (size * files) as f64 / 1e6;
    Ok(report(
        "media",
        json!({ "size_mib": args.size_mb, "count": count }),
        measured,
        &recorder,
        (uris.len() + downloaded) as u64,
        json!({
            "upload_mb_per_s": mb(uris.len()) / up_time.as_secs_f64().max(1e-9),
            "download_mb_per_s": mb(downloaded) / down_time.as_secs_f64().max(1e-9),
        }),
    ))
}
