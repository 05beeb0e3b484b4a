//! The HTTP side of [`Metrics::serve`]: hyper's HTTP/1.1 server on a current-thread tokio
//! runtime in a thread of its own, one task per connection, so that a slow or idle client
//! never delays another.
//!
//! - A request's head must arrive within [`HEAD_AT_MOST`], and the whole exchange take at most
//!   [`EXCHANGE_AT_MOST`]; one request per connection (`Connection: close`, as Prometheus and
//!   the kubelet open a connection per scrape or probe anyway).
//! - At most [`OPEN_AT_MOST`] connections are open. When a new one comes beyond that, the
//!   oldest that has not sent its request head yet is closed to make room (an idle or slow
//!   client loses its place to one that comes and asks); when every open connection is being
//!   answered, the new one is closed.
//! - At most [`READS_AT_ONCE`] answers read the kernel at the same time; the others wait their
//!   turn (within their deadline).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::TcpListener,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    thread::{self, JoinHandle},
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{ACCEPT, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};
use tracing::{debug, warn};

use super::{exposition::Format, Health, Metrics};

/// The request line and headers must arrive within this.
pub const HEAD_AT_MOST: Duration = Duration::from_secs(5);
/// A whole exchange, from the connection to the last byte of the answer.
pub const EXCHANGE_AT_MOST: Duration = Duration::from_secs(10);
/// Open connections at most (beyond it, the oldest waiting for its request head is closed).
pub const OPEN_AT_MOST: usize = 64;
/// Answers that read the kernel at the same time.
pub const READS_AT_ONCE: usize = 4;
/// What hyper buffers of a request at most (its minimum): a head is a few hundred bytes.
const BUFFER_AT_MOST: usize = 8 << 10;

impl Metrics {
    /// Answers HTTP on `listener` in a thread of its own until the process ends: `/metrics`
    /// and `/healthz`, each connection in its own task, with the deadlines and bounds of
    /// [`HEAD_AT_MOST`], [`EXCHANGE_AT_MOST`], [`OPEN_AT_MOST`] and [`READS_AT_ONCE`]. The
    /// thread inherits the calling thread's signal mask.
    pub fn serve(self, listener: TcpListener) -> std::io::Result<JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        thread::Builder::new()
            .name("metrics".into())
            .spawn(move || runtime.block_on(accept(Arc::new(self), listener)))
    }
}

async fn accept(metrics: Arc<Metrics>, listener: TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return warn!(error = %e, "metrics: cannot listen"),
    };
    let slots = Slots::default();
    let reads = Arc::new(Semaphore::new(READS_AT_ONCE));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: the open connections end within their deadline.
                debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some((id, evicted)) = slots.admit() else {
            debug!("metrics: every connection is being answered: one more closed");
            continue;
        };
        let (metrics, reads, slots) = (metrics.clone(), reads.clone(), slots.clone());
        tokio::spawn(async move {
            let held = slots.clone();
            let service = service_fn(move |request| {
                held.answering(id);
                let (metrics, reads) = (metrics.clone(), reads.clone());
                async move { Ok::<_, Infallible>(answer(&metrics, &reads, request).await) }
            });
            let exchange = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_AT_MOST)
                .keep_alive(false)
                .max_buf_size(BUFFER_AT_MOST)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = tokio::time::timeout(EXCHANGE_AT_MOST, exchange) => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(error = %e, "metrics: a connection failed"),
                    Err(_) => debug!("metrics: a connection took too long: closed"),
                },
                // (Its sender is dropped, not sent, once the request is in: no match then.)
                Ok(()) = evicted => debug!("metrics: an idle connection closed for a new one"),
            }
            slots.close(id);
        });
    }
}

/// The open connections: each waiting for its request head (and then closed to make room
/// when needed) or being answered.
#[derive(Debug, Clone, Default)]
struct Slots(Arc<Mutex<SlotsInner>>);

#[derive(Debug, Default)]
struct SlotsInner {
    next: u64,
    /// By age: the oldest first.
    open: BTreeMap<u64, Option<oneshot::Sender<()>>>,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, SlotsInner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection (closing the oldest one still waiting for its head when
    /// all are taken): its id, and what says that it was closed to make room in turn. `None`
    /// when every open connection is being answered.
    fn admit(&self) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut s = self.lock();
        if s.open.len() >= OPEN_AT_MOST {
            let oldest_waiting = s
                .open
                .iter()
                .find_map(|(id, waiting)| waiting.is_some().then_some(*id))?;
            if let Some(Some(close)) = s.open.remove(&oldest_waiting) {
                let _ = close.send(());
            }
        }
        let (close, closed) = oneshot::channel();
        let id = s.next;
        s.next += 1;
        s.open.insert(id, Some(close));
        Some((id, closed))
    }

    /// Connection `id` sent its request: it keeps its slot until it is answered.
    fn answering(&self, id: u64) {
        if let Some(waiting) = self.lock().open.get_mut(&id) {
            *waiting = None;
        }
    }

    fn close(&self, id: u64) {
        self.lock().open.remove(&id);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    Healthz,
    NotFound,
    NotAllowed,
}

/// Where a request goes, by its method and path (a query string is no part of the path).
fn route(method: &Method, path: &str) -> Route {
    let route = match path {
        "/metrics" => Route::Metrics,
        "/healthz" => Route::Healthz,
        _ => return Route::NotFound,
    };
    match *method {
        Method::GET | Method::HEAD => route,
        _ => Route::NotAllowed,
    }
}

async fn answer(
    metrics: &Metrics,
    reads: &Semaphore,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let route = route(request.method(), request.uri().path());
    if matches!(route, Route::NotFound | Route::NotAllowed) {
        return match route {
            Route::NotFound => text(StatusCode::NOT_FOUND, "not found: /metrics or /healthz\n"),
            _ => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n");
                r.headers_mut()
                    .insert(ALLOW, "GET, HEAD".parse().expect("a valid header"));
                r
            }
        };
    }
    // The semaphore is never closed.
    let _turn = reads.acquire().await;
    if route == Route::Healthz {
        return match metrics.health().await {
            Health::Ok(body) => text(StatusCode::OK, &body),
            Health::Failing(body) => text(StatusCode::SERVICE_UNAVAILABLE, &body),
        };
    }
    let accept = request.headers().get(ACCEPT).and_then(|a| a.to_str().ok());
    let format = Format::negotiate(accept);
    match metrics.scrape(format).await {
        Ok(body) => respond(StatusCode::OK, format.content_type(), body),
        Err(e) => {
            warn!(error = %e, "metrics: reading the router's counters failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n"))
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_string())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, content_type.parse().expect("a valid header"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_by_method_and_path() {
        for (method, path, to) in [
            (Method::GET, "/metrics", Route::Metrics),
            (Method::HEAD, "/metrics", Route::Metrics),
            (Method::GET, "/healthz", Route::Healthz),
            (Method::POST, "/healthz", Route::NotAllowed),
            (Method::GET, "/", Route::NotFound),
            (Method::GET, "/metrics/", Route::NotFound),
            (Method::GET, "/healthzz", Route::NotFound),
        ] {
            assert_eq!(route(&method, path), to, "{method} {path}");
        }
    }

    #[test]
    fn a_full_house_closes_the_oldest_idle_connection_never_one_being_answered() {
        let slots = Slots::default();
        let mut admitted: Vec<(u64, oneshot::Receiver<()>)> =
            (0..OPEN_AT_MOST).map(|_| slots.admit().unwrap()).collect();
        // The two oldest are being answered: the third oldest makes room.
        slots.answering(admitted[0].0);
        slots.answering(admitted[1].0);
        let newcomer = slots.admit().unwrap();
        assert_eq!(admitted[2].1.try_recv(), Ok(()));
        for (_, closed) in admitted.iter_mut().skip(3) {
            assert!(closed.try_recv().is_err());
        }
        assert_eq!(slots.lock().open.len(), OPEN_AT_MOST);
        // Every open connection being answered: a new one gets no slot.
        for (id, _) in admitted.iter().skip(3) {
            slots.answering(*id);
        }
        slots.answering(newcomer.0);
        assert!(slots.admit().is_none());
        // One ends: room again.
        slots.close(admitted[0].0);
        assert!(slots.admit().is_some());
    }
}
