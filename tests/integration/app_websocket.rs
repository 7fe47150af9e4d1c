//! A WebSocket that an axum app behind `GateLayer` upgrades itself ends when its user's access
//! does: the app puts a `StreamControl` into its `101` and closes the socket when the
//! `StreamEnd` resolves (the pattern `StreamControl`'s docs show). On a public route nothing
//! ends it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message as AppMessage, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use whopgate::{Config, Gate, StreamControl, StreamEnd};
use whopgate_mock::{MembershipStatus, MockState, MockWhop};

async fn chat(upgrade: WebSocketUpgrade) -> Response {
    let (control, end) = StreamControl::new();
    let mut response = upgrade.on_upgrade(move |socket| echo_until(socket, end)).into_response();
    response.extensions_mut().insert(control);
    response
}

/// Echoes text until the client leaves or the gate says the stream must end.
async fn echo_until(mut socket: WebSocket, end: StreamEnd) {
    tokio::pin!(end);
    loop {
        tokio::select! {
            () = &mut end => {
                let frame = CloseFrame { code: 1008, reason: "access revoked".into() };
                let _ = socket.send(AppMessage::Close(Some(frame))).await;
                return;
            }
            message = socket.recv() => match message {
                Some(Ok(AppMessage::Text(text))) => {
                    if socket.send(AppMessage::Text(text)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// The app on a real socket, `/ws` gated and `/open/ws` public, with the gate it is behind.
async fn app(mock: &MockWhop) -> (SocketAddr, Gate) {
    let toml = format!(
        "[whop]\napi_key = \"{}\"\napp_id = \"{}\"\napi_base = \"{}\"\n\n[cache]\nttl = \"1h\"\nrevalidate_streams = \"1h\"\n\n\
         [[route]]\npath = \"/open\"\npublic = true\n\n[[route]]\npath = \"/\"\nrequire = [\"prod_mockproduct1\"]\nmode = \"api\"\n",
        mock.api_key(),
        mock.app_id(),
        mock.base_url()
    );
    let config = Config::from_toml(&toml, "app.toml").unwrap();
    let gate = Gate::from_config(&config).await.unwrap();
    gate.keys_loaded().await;
    let router = Router::new().route("/ws", get(chat)).route("/open/ws", get(chat)).layer(gate.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (addr, gate)
}

async fn connect(
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request.headers_mut().insert("x-whop-user-token", token.parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("still in?")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("still in?"));
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_own_websocket_gets_a_close_frame_within_a_second_of_the_revocation() {
    let mock = MockWhop::start("127.0.0.1:0".parse().unwrap(), MockState::default()).unwrap();
    let (addr, gate) = app(&mock).await;
    let token = mock.mint_token("user_alice").unwrap();
    let mut gated = connect(addr, "/ws", &token).await;
    let mut public = connect(addr, "/open/ws", &token).await;

    mock.set_membership_status("mem_alice00000001", MembershipStatus::Expired).unwrap();
    let revoked = Instant::now();
    gate.invalidate_user("user_alice");
    let message = tokio::time::timeout(Duration::from_secs(3), gated.next()).await.expect("still open after 3 s");
    match message {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(frame.code, CloseCode::Policy);
            assert_eq!(frame.reason, "access revoked");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(revoked.elapsed() < Duration::from_secs(1), "closed {:?} after the revocation", revoked.elapsed());

    // The public route's socket is never watched: it goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    public.send(Message::text("and here?")).await.unwrap();
    assert_eq!(public.next().await.unwrap().unwrap(), Message::text("and here?"));
    // And a new gated upgrade is refused before the app sees it.
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("x-whop-user-token", token.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {:?}", other.map(|(_, r)| r.status())),
    }
}
