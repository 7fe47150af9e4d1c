//! Real front ends running deploy/'s own files, with only addresses substituted: nginx with
//! `deploy/nginx.conf`, Caddy with `deploy/Caddyfile` (whose addresses come from its
//! environment).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A front end process, stopped when dropped.
pub struct Front {
    child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    pub name: &'static str,
    _dir: tempfile::TempDir,
}

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn wait_listening(addr: SocketAddr, child: &mut Child, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "{name} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Front {
    /// nginx on `port`, judging with whopgate at `whopgate`, serving the app at `app`.
    pub fn nginx(port: u16, whopgate: SocketAddr, app: &str) -> Front {
        let app = app.trim_start_matches("http://").trim_end_matches('/');
        let conf = deploy("nginx.conf")
            .replace("server 127.0.0.1:8080;", &format!("server {whopgate};"))
            .replace("server 127.0.0.1:3000;", &format!("server {app};"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let prefix = dir.path().to_str().unwrap().to_owned();
        // Where this process writes, outside the file: pid, logs, not daemonized.
        let globals = format!("daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;");
        let mut child = Command::new("nginx")
            .args(["-p", &prefix, "-c", path.to_str().unwrap(), "-g", &globals])
            .env("PATH", format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut child, "nginx");
        Front { child, addr, name: "nginx", _dir: dir }
    }

    /// Caddy on `port`, judging with whopgate at `whopgate`, serving the app at `app`.
    pub fn caddy(port: u16, whopgate: SocketAddr, app: &str) -> Front {
        let app = app.trim_start_matches("http://").trim_end_matches('/');
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Caddyfile");
        std::fs::write(&path, deploy("Caddyfile")).unwrap();
        let mut child = Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config", path.to_str().unwrap()])
            .env("SITE", format!("http://:{port}"))
            .env("WHOPGATE", whopgate.to_string())
            .env("APP", app)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start caddy");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_listening(addr, &mut child, "caddy");
        Front { child, addr, name: "caddy", _dir: dir }
    }

    /// `http://addr{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
