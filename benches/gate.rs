//! The gate's own cost per request, in process (no sockets): what whopgate adds in front of a
//! service that does nothing.
//!
//! - `cache hit`: the token and the decision are cached — the path nearly every request of a
//!   busy app takes. Target: under 5 µs.
//! - `first-seen token`: a token not seen before (an ES256 signature check), decision cached.
//!
//! Run: `cargo bench --bench gate`.

use std::convert::Infallible;
use std::future::ready;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service, ServiceExt, service_fn};
use whopgate::{Config, Gate};
use whopgate_mock::{MockState, MockWhop, TokenOptions};

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let _guard = runtime.enter();
    let mock = MockWhop::start("127.0.0.1:0".parse().expect("addr"), MockState::default()).expect("mock");
    let config = Config::from_toml(
        &format!(
            "[whop]\napi_key = \"{}\"\napp_id = \"{}\"\napi_base = \"{}\"\n\n[[route]]\npath = \"/\"\nrequire = [\"prod_mockproduct1\"]\n",
            mock.api_key(),
            mock.app_id(),
            mock.base_url()
        ),
        "bench.toml",
    )
    .expect("config");
    let gate = runtime.block_on(Gate::from_config(&config)).expect("gate");
    runtime.block_on(gate.keys_loaded());
    let inner =
        service_fn(|_req: Request<Empty<Bytes>>| ready(Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))));
    let mut service = gate.layer().layer(inner);
    let token = mock.mint_token("user_alice").expect("token");
    let request = |token: &str| {
        Request::get("/dashboard?tab=1")
            .header("host", "app.example.com")
            .header("accept", "application/json")
            .header("user-agent", "bench")
            .header("x-whop-user-token", token)
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    // Warm both caches (the first request asks the mock).
    let warm = runtime.block_on(service.clone().oneshot(request(&token))).expect("warm");
    assert_eq!(warm.status(), 200);

    let mut group = c.benchmark_group("gate");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("cache hit (token and decision cached)", |b| {
        b.iter_batched(
            || request(&token),
            |req| {
                let ready = service.ready().now_or_never().and_then(Result::ok).expect("ready");
                let response = ready.call(req).now_or_never();
                assert!(matches!(&response, Some(Ok(r)) if r.status() == 200));
                drop(response);
            },
            BatchSize::SmallInput,
        )
    });
    let mut n = 0u64;
    group.bench_function("first-seen token (ES256 verify, decision cached)", |b| {
        b.iter_batched(
            || {
                n += 1;
                // A different lifetime makes a different token.
                let fresh = mock
                    .mint_token_with("user_alice", TokenOptions::ttl(Duration::from_secs(3600 + n)))
                    .expect("token");
                request(&fresh)
            },
            |req| {
                let ready = service.ready().now_or_never().and_then(Result::ok).expect("ready");
                let response = ready.call(req).now_or_never();
                assert!(matches!(&response, Some(Ok(r)) if r.status() == 200));
                drop(response);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
