//! The one error type of the request path, and its mapping to HTTP.
//!
//! Errors are typed where they happen and turned into a status code in one
//! place ([`ProxyError::status`]). Each error also records which side caused
//! it, which decides the log level and the metric it is counted under.

use std::time::Duration;

use http::StatusCode;

/// A boxed error, as hyper hands them out.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The client sent something invalid or went away.
    Client,
    /// The origin was unreachable, slow, or answered with something invalid.
    Origin,
    /// The proxy itself failed.
    Proxy,
}

impl ErrorSide {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSide::Client => "client",
            ErrorSide::Origin => "origin",
            ErrorSide::Proxy => "proxy",
        }
    }
}

/// Everything that can end a request before the origin's response reaches
/// the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed or could smuggle a second request.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Too many header fields, or a field section above the size limit.
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// The body (declared or streamed) is above `limits.max_request_body_size`.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client stopped sending the request body it announced.
    #[error("client sent no request body bytes within {0:?}")]
    BodyTimeout(Duration),
    /// A method the proxy does not forward (CONNECT, TRACE, unknown ones).
    #[error("method {0} is not forwarded")]
    MethodNotImplemented(String),
    /// The origin refused the connection or could not be reached.
    #[error("origin unreachable")]
    OriginConnect(#[source] BoxError),
    /// The origin accepted the request but sent no response head in time.
    #[error("origin sent no response headers within {0:?}")]
    OriginTimeout(Duration),
    /// The origin's response could not be read or is not valid HTTP/1.1.
    #[error("origin response invalid or interrupted")]
    OriginProtocol(#[source] BoxError),
    /// A TLS connection asked for a host name that no site answers for, or
    /// that another site's certificate covers (RFC 9110 §15.5.20): the
    /// client should connect again for that name.
    #[error("no site answers for this host name on this connection")]
    Misdirected,
    /// A cleartext request for a host name that no site answers for.
    #[error("no site answers for this host name")]
    UnknownSite,
    /// The proxy is shutting down or over a limit.
    #[error("service unavailable: {0}")]
    Unavailable(&'static str),
}

impl ProxyError {
    /// The status code the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyError::OriginConnect(_) => StatusCode::BAD_GATEWAY,
            ProxyError::OriginTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::OriginProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::UnknownSite => StatusCode::NOT_FOUND,
            ProxyError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Which side caused the error.
    pub fn side(&self) -> ErrorSide {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyTimeout(_)
            | ProxyError::MethodNotImplemented(_)
            | ProxyError::Misdirected
            | ProxyError::UnknownSite => ErrorSide::Client,
            ProxyError::OriginConnect(_)
            | ProxyError::OriginTimeout(_)
            | ProxyError::OriginProtocol(_) => ErrorSide::Origin,
            ProxyError::Unavailable(_) => ErrorSide::Proxy,
        }
    }

    /// The error and its whole chain of causes on one line, for the log.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            out.push_str(": ");
            out.push_str(&cause.to_string());
            source = cause.source();
        }
        out
    }
}

/// The response for an error, before anything of the origin's response went
/// out: a short plain-text body naming the status. This is the one place an
/// error becomes a response.
pub fn error_response(error: &ProxyError) -> (http::response::Parts, bytes::Bytes) {
    use http::header::{self, HeaderValue};
    let status = error.status();
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (parts, bytes::Bytes::from(text))
}
