-- The media repository's metadata. Kept table-for-table equivalent to
-- sql/sqlite/0012_media.sql.

-- One row per media id. The content columns are NULL while an id created by
-- POST /create waits for its upload (until expires_ms). sha256 names the
-- blob in the media backend; identical content shares one blob.
CREATE TABLE media (
    server_name  TEXT    NOT NULL,
    media_id     TEXT    NOT NULL,
    uploader     TEXT,
    created_ms   BIGINT  NOT NULL,
    expires_ms   BIGINT ,
    content_type TEXT,
    filename     TEXT,
    size         BIGINT ,
    sha256       TEXT,
    uploaded_ms  BIGINT ,
    quarantined  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_pending ON media (uploader, expires_ms) WHERE uploaded_ms IS NULL;

-- Thumbnails made once (on upload, or on the first request of a size) and
-- kept.
CREATE TABLE media_thumbnails (
    server_name  TEXT    NOT NULL,
    media_id     TEXT    NOT NULL,
    width        BIGINT  NOT NULL,
    height       BIGINT  NOT NULL,
    method       TEXT    NOT NULL,
    animated     BOOLEAN NOT NULL,
    content_type TEXT    NOT NULL,
    size         BIGINT  NOT NULL,
    sha256       TEXT    NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method, animated)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);
