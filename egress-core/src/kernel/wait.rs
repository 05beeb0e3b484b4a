//! [`wait`]: the calling thread parked until a future is done (a pool job's reply), without a
//! runtime of its own.

use std::{
    future::Future,
    pin::pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
    thread::{self, Thread},
};

/// Polls `f` on the calling thread, parking it in between, until it is done.
///
/// Not `futures::executor::block_on`, which refuses to run inside another of its kind on the
/// same thread: a program's logging handler that runs for one of the crate's events, on the
/// thread of a blocking call, may call the crate again. Each call here has its own wake flag,
/// so a nested one that consumes the thread's unpark loses no wake-up of the outer one.
pub(crate) fn wait<T>(f: impl Future<Output = T>) -> T {
    struct Signal {
        woken: AtomicBool,
        thread: Thread,
    }
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::Release);
            self.thread.unpark();
        }
    }
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(false),
        thread: thread::current(),
    });
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        while !signal.woken.swap(false, Ordering::Acquire) {
            thread::park();
        }
    }
}
