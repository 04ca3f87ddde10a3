//! Moving media between backends (`myelin media migrate --to s3`): every
//! blob the database references is copied from one backend to the other,
//! its SHA-256 checked on the way. Blobs already in the target are skipped,
//! so a run that stops (or fails on some blobs) is simply run again. The
//! source is left as it was; switch `media.backend` once a run reports no
//! failures.

use std::path::Path;

use myelin_core::secrets::random_alphanumeric;
use myelin_storage::DynStorage;

use crate::backend::{MediaBackend, spool};
use crate::repo::RepoResult;

/// Blob names read from the database at a time.
const PAGE: u32 = 500;

/// What a migration run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Blobs copied by this run.
    pub copied: u64,
    /// Bytes copied by this run.
    pub bytes: u64,
    /// Blobs the target had already (an earlier run, or shared content).
    pub already_there: u64,
    /// Blobs that could not be copied: `(name, why)`. A blob missing from
    /// the source or whose bytes do not hash to its name is one of these.
    pub failed: Vec<(String, String)>,
}

/// Copies every referenced blob from `from` to `to`, calling `progress`
/// after each page.
pub async fn migrate_blobs(
    storage: &DynStorage,
    from: &dyn MediaBackend,
    to: &dyn MediaBackend,
    tmp_dir: &Path,
    mut progress: impl FnMut(&MigrationReport),
) -> RepoResult<MigrationReport> {
    tokio::fs::create_dir_all(tmp_dir).await?;
    let mut report = MigrationReport::default();
    let mut after: Option<String> = None;
    loop {
        let page = storage.media_blobs(after.as_deref(), PAGE).await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        for sha256 in page {
            if to.exists(&sha256).await? {
                report.already_there += 1;
                continue;
            }
            match copy_blob(&sha256, from, to, tmp_dir).await {
                Ok(len) => {
                    report.copied += 1;
                    report.bytes += len;
                }
                Err(why) => report.failed.push((sha256, why)),
            }
        }
        progress(&report);
        after = Some(last);
    }
    Ok(report)
}

/// Copies one blob through a temporary file, checking its hash; the reason
/// it failed otherwise.
async fn copy_blob(
    sha256: &str,
    from: &dyn MediaBackend,
    to: &dyn MediaBackend,
    tmp_dir: &Path,
) -> Result<u64, String> {
    let blob = match from.get(sha256, None).await {
        Ok(Some(blob)) => blob,
        Ok(None) => return Err("missing from the source".to_owned()),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let path = tmp_dir.join(random_alphanumeric(24));
    let (actual, len) = spool(blob.body, &path, None)
        .await
        .map_err(|e| format!("cannot read it: {e}"))?;
    if actual != sha256 {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(format!(
            "its bytes hash to {actual}: the source copy is corrupt"
        ));
    }
    if let Err(e) = to.put_file(sha256, &path, len).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(format!("cannot write it: {e}"));
    }
    Ok(len)
}
