//! TLS + HTTP/2 connection setup shared by every mode.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use http::Request;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Where to connect and what to ask for; shared by all modes.
#[derive(clap::Args, Clone, Debug)]
pub struct Target {
    /// Address to connect to (ip:port). May be a relay in front of the server.
    #[arg(long)]
    pub connect: SocketAddr,
    /// :authority of every request [default: the --connect address]
    #[arg(long)]
    pub authority: Option<String>,
    /// TLS server name: an IP address or a DNS name
    #[arg(long, default_value = "127.0.0.1")]
    pub sni: String,
    /// Accept only this certificate (PEM); without it any certificate is accepted
    /// (handshake signatures are still verified)
    #[arg(long)]
    pub cert: Option<std::path::PathBuf>,
    /// Path to fetch
    #[arg(long, default_value = "/")]
    pub path: String,
    /// HTTP/2 initial stream window (bytes), as browsers advertise
    #[arg(long, default_value_t = 6 * 1024 * 1024)]
    pub stream_window: u32,
    /// HTTP/2 connection window (bytes)
    #[arg(long, default_value_t = 15 * 1024 * 1024)]
    pub conn_window: u32,
}

impl Target {
    pub fn authority(&self) -> String {
        self.authority
            .clone()
            .unwrap_or_else(|| self.connect.to_string())
    }

    pub fn request(&self, path: &str) -> Request<()> {
        Request::builder()
            .method("GET")
            .uri(format!("https://{}{}", self.authority(), path))
            .header("user-agent", "linkpush-bench-pushclient/0.1")
            .header("accept", "*/*")
            .body(())
            .expect("valid request")
    }
}

/// Accepts the benchmark's self-signed certificate (optionally pinned to one
/// exact certificate) while still checking handshake signatures, so the client
/// does the same cryptographic work as a verifying one.
#[derive(Debug)]
struct BenchVerifier {
    provider: Arc<CryptoProvider>,
    pinned: Option<Vec<u8>>,
}

impl ServerCertVerifier for BenchVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(der) if der.as_slice() != end_entity.as_ref() => Err(rustls::Error::General(
                "server certificate is not the pinned one".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS client offering only ALPN "h2", without session resumption: every
/// connection is a full handshake, like a first visit.
pub fn tls_connector(target: &Target) -> Result<TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pinned = match &target.cert {
        Some(path) => Some(CertificateDer::from_pem_file(path)?.as_ref().to_vec()),
        None => None,
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(BenchVerifier { provider, pinned }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

pub struct Conn {
    pub send: SendRequest<Bytes>,
    pub driver: JoinHandle<std::result::Result<(), h2::Error>>,
}

/// TCP connect, TLS handshake (ALPN h2 required) and HTTP/2 preface.
pub async fn connect(target: &Target, tls: &TlsConnector, enable_push: bool) -> Result<Conn> {
    let tcp = TcpStream::connect(target.connect).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(target.sni.clone())?;
    let stream = tls.connect(name, tcp).await?;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("server did not negotiate ALPN h2".into());
    }
    let (send, connection) = h2::client::Builder::new()
        .enable_push(enable_push)
        .initial_window_size(target.stream_window)
        .initial_connection_window_size(target.conn_window)
        .max_concurrent_streams(1000)
        .max_concurrent_reset_streams(1000)
        .handshake::<_, Bytes>(stream)
        .await?;
    let driver = tokio::spawn(connection);
    Ok(Conn { send, driver })
}

/// Reads a body to its end, returning the bytes read and when the last one came.
pub async fn read_body(mut body: RecvStream) -> std::result::Result<(u64, Instant), h2::Error> {
    let mut n = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        n += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    // A response may end with trailers; wait for the end of the stream either way.
    let _ = body.trailers().await?;
    Ok((n, Instant::now()))
}

/// Outcome of one GET (or one pushed response).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    pub bytes: u64,
    pub done: Instant,
}

/// Issues one GET on the connection and reads the whole response.
pub async fn get(send: SendRequest<Bytes>, target: &Target, path: &str) -> Result<Fetched> {
    let mut send = send.ready().await?;
    let (response, _) = send.send_request(target.request(path), true)?;
    let response = response.await?;
    let status = response.status().as_u16();
    let (bytes, done) = read_body(response.into_body()).await?;
    Ok(Fetched {
        status,
        bytes,
        done,
    })
}

/// Waits for a pushed response and reads its body.
pub async fn read_pushed(fut: h2::client::PushedResponseFuture) -> Result<Fetched> {
    let response = fut.await?;
    let status = response.status().as_u16();
    let (bytes, done) = read_body(response.into_body()).await?;
    Ok(Fetched {
        status,
        bytes,
        done,
    })
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}
