//! Error enums, one per boundary, each knowing its wire `code()`.

use thiserror::Error;

/// Start-up configuration problems; the CLI prints them on one line.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A key has a bad value, or a required one is missing.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Storage failures as the rest of the server sees them.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// PostgreSQL cannot be reached or the pool is exhausted: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else PostgreSQL said.
    #[error("database error: {0}")]
    Db(String),
    /// The write would pass a configured limit.
    #[error("limit: {0}")]
    Limit(String),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict(db.message().to_string());
            }
            return StoreError::Db(db.message().to_string());
        }
        // Closed connection, I/O error, timeout: all mean "not now".
        StoreError::Unavailable(e.to_string())
    }
}

impl From<bb8::RunError<tokio_postgres::Error>> for StoreError {
    fn from(e: bb8::RunError<tokio_postgres::Error>) -> Self {
        match e {
            bb8::RunError::User(e) => e.into(),
            bb8::RunError::TimedOut => StoreError::Unavailable("connection pool timed out".into()),
        }
    }
}

/// The error codes of the event format (README), shared by the WebSocket `error` event and REST error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed JSON, unknown type, missing or wrong-typed field.
    BadRequest,
    /// Missing, bad or expired token.
    Unauthorized,
    /// Not a member, or an identity field that is not the caller's.
    Forbidden,
    /// No such room, user or message.
    NotFound,
    /// Content or body over its limit.
    TooLarge,
    /// Too many events; retry after `retry_after_ms`.
    RateLimited,
    /// Storage cannot take the write now.
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
    /// REST only: a unique value is taken.
    Conflict,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Conflict => "conflict",
        }
    }

    /// The HTTP status a REST error with this code carries.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// An error answered to a client, over REST or WebSocket.
#[derive(Debug, Clone, Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    /// Wire code.
    pub code: ErrorCode,
    /// Human-readable explanation (never contains secrets).
    pub message: String,
    /// For `rate_limited` and `unavailable`.
    pub retry_after_ms: Option<u64>,
    /// REST status when it is not the code's usual one (a limit on a request's meaning rather
    /// than its size is 400 `too_large`).
    pub status: Option<u16>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_ms: None, status: None }
    }

    /// The HTTP status of this error over REST.
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.code.http_status())
    }

    /// 400 `too_large`: a count past a configured limit (rooms per user, members at creation).
    pub fn limit(message: impl Into<String>) -> Self {
        Self { status: Some(400), ..Self::new(ErrorCode::TooLarge, message) }
    }

    /// `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// `unavailable` with a retry hint.
    pub fn unavailable(message: impl Into<String>, retry_after_ms: u64) -> Self {
        Self { retry_after_ms: Some(retry_after_ms), ..Self::new(ErrorCode::Unavailable, message) }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::unavailable("storage is unavailable, retry later", 1000),
            StoreError::NotFound => ApiError::not_found("not found"),
            StoreError::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            StoreError::Limit(m) => ApiError::limit(m),
            StoreError::Db(m) => {
                tracing::error!(error = %m, "Database error.");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}
