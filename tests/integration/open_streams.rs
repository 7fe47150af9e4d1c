//! Open streams stay judged: a WebSocket or an SSE stream opened under a grant ends within a
//! second of a webhook revoking its user, and within `revalidate_streams` of the grant expiring
//! with Whop now saying no.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use whopgate_mock::{MembershipStatus, MockState, MockWhop};

use crate::support::{Upstream, Whopgate, gated_config};
use crate::webhooks::{SECRET, deliver_signed, event, now};

async fn setup(cache: &str) -> (Upstream, MockWhop, Whopgate) {
    let up = Upstream::start().await;
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let rest = format!(
        "[cache]\n{cache}\n\n[webhook]\nsecret = \"{SECRET}\"\n\n[[route]]\npath = \"/\"\nrequire = [\"prod_mockproduct1\"]\nmode = \"api\"\n"
    );
    let gate = Whopgate::start(&gated_config(&up.url(), &mock, "", &rest));
    (up, mock, gate)
}

async fn revoke_alice(mock: &MockWhop, gate: &Whopgate) -> Instant {
    mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    let body = event("membership.deactivated", json!({"id": "mem_alice00000001", "user": {"id": "user_alice"}}));
    let sent = Instant::now();
    assert_eq!(deliver_signed(gate, &format!("msg_{}", now()), &body).await.status(), 200);
    sent
}

/// Opens a long SSE stream as alice and reads its first event.
async fn open_sse(mock: &MockWhop, gate: &Whopgate) -> reqwest::Response {
    let mut response = reqwest::Client::new()
        .get(gate.url("/sse?n=100000&gap_ms=100"))
        .header("accept", "text/event-stream")
        .header("x-whop-user-token", mock.mint_token("user_alice").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: event 0"), "{first:?}");
    response
}

/// Reads until the stream ends; returns when it did, or panics after `limit`.
pub(crate) async fn wait_for_end(response: &mut reqwest::Response, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => return Instant::now(),
            Err(_) => panic!("the stream was still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_ends_within_a_second_of_the_revoking_webhook() {
    let (up, mock, gate) = setup("ttl = \"1h\"\nrevalidate_streams = \"1h\"").await;
    let mut stream = open_sse(&mock, &gate).await;
    // Still flowing: events keep coming while access holds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(stream.chunk().await.unwrap().is_some());
    assert_eq!(up.open_connections(), 1, "the stream's connection to the app");
    let sent = revoke_alice(&mock, &gate).await;
    let ended = wait_for_end(&mut stream, Duration::from_secs(3)).await;
    assert!(ended - sent < Duration::from_secs(1), "ended {:?} after the webhook", ended - sent);
    // The gate let go of the app's side too: the app's next write finds it closed.
    let deadline = Instant::now() + Duration::from_secs(1);
    while up.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the upstream connection was still open a second after the stream ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new request is refused, and the gate says what it closed.
    let again = reqwest::Client::new()
        .get(gate.url("/sse?n=1"))
        .header("x-whop-user-token", mock.mint_token("user_alice").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 403);
    let metrics = reqwest::get(gate.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("whopgate_streams_closed_total 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_gets_a_close_frame_within_a_second_of_the_revoking_webhook() {
    let (_up, mock, gate) = setup("ttl = \"1h\"\nrevalidate_streams = \"1h\"").await;
    let mut request = format!("ws://{}/ws", gate.addr).into_client_request().unwrap();
    request.headers_mut().insert("x-whop-user-token", mock.mint_token("user_alice").unwrap().parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("still in?")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("still in?"));

    let sent = revoke_alice(&mock, &gate).await;
    let message = tokio::time::timeout(Duration::from_secs(3), ws.next()).await.expect("still open after 3 s");
    let closed = Instant::now();
    match message {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert_eq!(frame.reason, "access revoked");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(closed - sent < Duration::from_secs(1), "closed {:?} after the webhook", closed - sent);
    // Nothing more gets through: the tunnel is gone both ways.
    let after = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.send(Message::text("anyone?")).await;
        ws.next().await
    })
    .await
    .expect("the connection should be closed, not hanging");
    assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_open_across_the_ttl_ends_within_revalidate_streams_once_whop_says_no() {
    let (_up, mock, gate) = setup("ttl = \"1s\"\nrevalidate_streams = \"1s\"").await;
    let mut stream = open_sse(&mock, &gate).await;
    // Past one re-judgement with access still granted, the stream goes on.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(stream.chunk().await.unwrap().is_some(), "the stream must go on while access holds");
    // Whop now says no, with no webhook: the grant lives out its ttl, then the next
    // re-judgement (every second) asks Whop and ends the stream.
    mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    let changed = Instant::now();
    let ended = wait_for_end(&mut stream, Duration::from_secs(5)).await;
    let took = ended - changed;
    assert!(took < Duration::from_millis(2500), "ended {took:?} after access ended (ttl 1 s + revalidate 1 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_another_user_leaves_the_stream_alone() {
    let (_up, mock, gate) = setup("ttl = \"1h\"\nrevalidate_streams = \"1h\"").await;
    let mut stream = open_sse(&mock, &gate).await;
    let body = event("membership.deactivated", json!({"id": "mem_dave000000001", "user": {"id": "user_dave"}}));
    assert_eq!(deliver_signed(&gate, "msg_dave", &body).await.status(), 200);
    // Alice's stream keeps flowing for the next second.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert!(stream.chunk().await.unwrap().is_some(), "alice's stream ended on dave's webhook");
    }
}
