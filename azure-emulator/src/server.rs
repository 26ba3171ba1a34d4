//! The HTTP/1.1 server: an accept loop on a loopback listener and one Tokio task per connection, using hyper
//! directly so that a fault can reset the TCP connection or leave a request unanswered. With TLS
//! ([`crate::EmulatorConfig::tls`]) each connection first completes a TLS handshake; a client that refuses the
//! certificate simply ends its connection. Faults behave the same over TLS: a reset closes the socket under the
//! TLS session (no `close_notify`), a hang never answers.
//!
//! To reset a connection, each connection task keeps a duplicate of the socket's descriptor. A `Reset` fault
//! sets `SO_LINGER` to zero on it and closes both descriptors, which makes the kernel send a TCP RST instead of a
//! FIN, as a dropped load balancer connection would.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::handler::{self, Received};
use crate::reply::{Outcome, Reply};
use crate::state::Shared;

/// Largest request body read; requests to the emulator are small.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Accepts connections until the emulator is cancelled, then closes them all. With `tls`, every connection
/// speaks HTTPS.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(connection(stream, Arc::clone(&shared), tls.clone()));
                } else {
                    // Out of descriptors or similar: let connections finish before trying again.
                    tokio::task::yield_now().await;
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// Serves one connection (after its TLS handshake, with `tls`) until the client closes it, a fault resets it, or
/// the emulator stops.
async fn connection(stream: TcpStream, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let Ok((stream, spare)) = with_spare_descriptor(stream) else {
        return;
    };
    match tls {
        None => serve_http(stream, spare, shared).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                handshake = acceptor.accept(stream) => handshake,
                () = shared.cancel.cancelled() => return,
            };
            // A failed handshake (say, a client that does not trust the CA) ends the connection.
            if let Ok(stream) = handshake {
                serve_http(stream, spare, shared).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on `stream`, whose socket `spare` also holds.
async fn serve_http<S>(stream: S, spare: std::net::TcpStream, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reset = Arc::new(Notify::new());
    let service = {
        let (shared, reset) = (Arc::clone(&shared), Arc::clone(&reset));
        service_fn(move |request| respond(Arc::clone(&shared), Arc::clone(&reset), request))
    };
    let mut connection =
        Box::pin(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    let was_reset = tokio::select! {
        _ = &mut connection => false,
        () = reset.notified() => true,
        () = shared.cancel.cancelled() => false,
    };
    drop(connection);
    if was_reset {
        // The spare is now the socket's last descriptor: with zero linger, closing it sends a reset.
        if let Ok(spare) = TcpStream::from_std(spare) {
            let _ = spare.set_zero_linger();
        }
    }
}

/// The stream, and a second descriptor of the same socket for resetting it later.
fn with_spare_descriptor(stream: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let stream = stream.into_std()?;
    let spare = stream.try_clone()?;
    Ok((TcpStream::from_std(stream)?, spare))
}

/// Reads a request, lets the handler decide, and answers (or resets, or hangs).
async fn respond(
    shared: Arc<Shared>,
    reset: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => return Ok(response(Reply::empty(413))),
    };
    let received = Received {
        method: parts.method.as_str().to_owned(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: parts.headers,
        body,
    };
    match handler::handle(&shared, &received) {
        Outcome::Reply(reply) => Ok(response(reply)),
        Outcome::Reset => {
            reset.notify_one();
            std::future::pending().await
        }
        Outcome::Hang => std::future::pending().await,
    }
}

/// Turns a handler's reply into a hyper response.
fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    response
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| {
            let mut fallback = Response::new(Full::new(Bytes::from_static(
                b"emulator built an invalid response",
            )));
            *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}
