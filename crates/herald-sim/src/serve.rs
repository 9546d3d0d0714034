//! The one accept loop of every in-process HTTP/1.1 server outside the agent: the simulator's API, the OTLP
//! receiver (the demo's console and the tests' collector), the tests' webhook receiver and the fake API servers
//! some tests write. It accepts until told to stop, serves each connection on its own task, and on stop drops
//! the connections still open, which is how a peer sees a server go down. It lives here, not in
//! herald-test-support, because the simulator and the demo's OTLP console (both in the `demo` build) use it
//! too; herald-test-support re-exports it. It must not know what it serves: the handler decides every answer.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long to wait after a failed accept (out of file descriptors, a connection reset while queued): such
/// errors pass, and retrying at once would spin on a core.
const ACCEPT_PAUSE: Duration = Duration::from_millis(20);

/// Serve HTTP/1.1 on `listener` with `handler` until `stop` is cancelled; then the connections still open
/// are dropped (their sockets close) and this returns.
pub async fn http1<H, F, B>(listener: TcpListener, stop: CancellationToken, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            },
            () = stop.cancelled() => return,
        };
        let handler = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    #[tokio::test]
    async fn serves_until_stopped_then_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(http1(listener, stop.clone(), |req: Request<Incoming>| {
            let path = req.uri().path().to_string();
            async move { Response::new(Full::new(Bytes::from(path))) }
        }));
        let got = tokio::task::spawn_blocking(move || {
            herald_test_support::probe::http_get(addr, "/hello")
        })
        .await
        .unwrap();
        assert_eq!(got, Some((200, "/hello".to_string())));
        stop.cancel();
        task.await.unwrap();
        let after =
            tokio::task::spawn_blocking(move || herald_test_support::probe::http_get(addr, "/"))
                .await
                .unwrap();
        assert_eq!(after, None, "the listener is closed once stopped");
    }
}
