//! Cache hits allocate nothing: once a user's token and decision are cached, a gated request
//! costs exactly the allocations of the same request on a public route, where the gate has
//! nothing to look up. (Its own test binary, because it counts with a global allocator.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::ready;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service, ServiceExt, service_fn};
use whopgate::{Config, Gate};
use whopgate_mock::{EndpointKind, MockState, MockWhop};

/// Counts the allocations made on the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is passed to the system allocator unchanged; counting touches only a
// const-initialised thread-local, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_cached_gated_request_allocates_no_more_than_a_public_one() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = runtime.enter();
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let config = Config::from_toml(
        &format!(
            "[whop]\napi_key = \"{}\"\napp_id = \"{}\"\napi_base = \"{}\"\n\n\
             [[route]]\npath = \"/public\"\npublic = true\n\n\
             [[route]]\npath = \"/\"\nrequire = [\"prod_mockproduct1\"]\n",
            mock.api_key(),
            mock.app_id(),
            mock.base_url()
        ),
        "allocations.toml",
    )
    .unwrap();
    let gate = runtime.block_on(Gate::from_config(&config)).unwrap();
    runtime.block_on(gate.keys_loaded());
    let inner =
        service_fn(|_req: Request<Empty<Bytes>>| ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))));
    let mut service = gate.layer().without_user_extension().layer(inner);
    let token = mock.mint_token("user_alice").unwrap();
    let request = |path: &str| {
        Request::get(path)
            .header("host", "app.example.com")
            .header("accept", "text/html")
            .header("x-whop-user-token", &token)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    // Warm: the token verified and the decision fetched once (these allocate, as they should).
    for path in ["/app", "/public", "/app", "/public"] {
        let response = runtime.block_on(service.clone().oneshot(request(path))).unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }

    // Allocations of one request through the gate, response dropped, after `rounds` of the same.
    let mut measure = |path: &str| {
        let rounds = 200;
        let requests: Vec<_> = (0..rounds).map(|_| request(path)).collect();
        let before = allocations();
        for req in requests {
            let ready = service.ready().now_or_never().and_then(Result::ok).unwrap();
            let response = ready.call(req).now_or_never();
            assert!(matches!(&response, Some(Ok(r)) if r.status() == 200), "{path} was not forwarded at once");
            drop(response);
        }
        (allocations() - before) as f64 / rounds as f64
    };
    let public = measure("/public");
    let gated = measure("/app");
    let public_again = measure("/public");
    assert_eq!(public, public_again, "the public route's allocations are not steady");
    assert_eq!(gated, public, "a cached gated request allocates {gated} times, a public one {public}");

    // And they were cache hits: Whop was not asked again.
    assert_eq!(mock.calls(EndpointKind::Access), 1);
}
