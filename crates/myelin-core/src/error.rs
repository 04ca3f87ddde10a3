//! Matrix error kinds (`errcode`s) shared by every layer.
//!
//! Lower layers say *what* went wrong as an [`ErrorKind`]; only the HTTP layer
//! decides which status code that is.

use std::fmt;

/// A Matrix error: an `errcode` with its extra fields, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type MatrixResult<T> = Result<T, MatrixError>;

/// The `errcode`s Myelin answers with, and the fields some of them carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    Forbidden,
    UnknownToken {
        soft_logout: bool,
    },
    MissingToken,
    BadJson,
    NotJson,
    NotFound,
    LimitExceeded {
        retry_after_ms: u64,
    },
    /// An unknown endpoint. `method_not_allowed` picks 405 over 404.
    Unrecognized {
        method_not_allowed: bool,
    },
    Unknown,
    Unauthorized,
    UserDeactivated,
    UserInUse,
    InvalidUsername,
    InvalidParam,
    MissingParam,
    TooLarge,
    Exclusive,
    GuestAccessForbidden,
    WeakPassword,
    ThreepidNotFound,
    RoomInUse,
    UnsupportedRoomVersion,
    InvalidRoomState,
    BadAlias,
    /// A second `m.annotation` with the same key by the same user on one event.
    DuplicateAnnotation,
    /// Keys uploaded to a backup version that is not the current one.
    WrongRoomKeysVersion {
        current_version: i64,
    },
    /// A cross-signing key whose signature does not verify.
    InvalidSignature,
    /// A download of a media id reserved by `POST /create` whose content
    /// has not been uploaded within the wait (504).
    NotYetUploaded,
    /// An upload to a media id that already has content (409).
    CannotOverwriteMedia,
    /// 500: the detail goes to the log, never to the client.
    Internal,
}

impl ErrorKind {
    /// The `errcode` string of the spec.
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::Forbidden => "M_FORBIDDEN",
            Self::UnknownToken { .. } => "M_UNKNOWN_TOKEN",
            Self::MissingToken => "M_MISSING_TOKEN",
            Self::BadJson => "M_BAD_JSON",
            Self::NotJson => "M_NOT_JSON",
            Self::NotFound => "M_NOT_FOUND",
            Self::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            Self::Unrecognized { .. } => "M_UNRECOGNIZED",
            Self::Unknown | Self::Internal => "M_UNKNOWN",
            Self::Unauthorized => "M_UNAUTHORIZED",
            Self::UserDeactivated => "M_USER_DEACTIVATED",
            Self::UserInUse => "M_USER_IN_USE",
            Self::InvalidUsername => "M_INVALID_USERNAME",
            Self::InvalidParam => "M_INVALID_PARAM",
            Self::MissingParam => "M_MISSING_PARAM",
            Self::TooLarge => "M_TOO_LARGE",
            Self::Exclusive => "M_EXCLUSIVE",
            Self::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            Self::WeakPassword => "M_WEAK_PASSWORD",
            Self::ThreepidNotFound => "M_THREEPID_NOT_FOUND",
            Self::RoomInUse => "M_ROOM_IN_USE",
            Self::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            Self::InvalidRoomState => "M_INVALID_ROOM_STATE",
            Self::BadAlias => "M_BAD_ALIAS",
            Self::DuplicateAnnotation => "M_DUPLICATE_ANNOTATION",
            Self::WrongRoomKeysVersion { .. } => "M_WRONG_ROOM_KEYS_VERSION",
            Self::InvalidSignature => "M_INVALID_SIGNATURE",
            Self::NotYetUploaded => "M_NOT_YET_UPLOADED",
            Self::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
        }
    }
}

impl MatrixError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }
    pub fn missing_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingParam, message)
    }
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unknown, message)
    }
    /// An internal failure. `detail` is for the log; clients see a generic text.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Internal, detail.to_string())
    }
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.errcode(), self.message)
    }
}

impl std::error::Error for MatrixError {}
