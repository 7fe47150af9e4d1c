//! One listening socket per worker on the same address (`SO_REUSEPORT`), so the kernel spreads
//! connections over the workers.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

const BACKLOG: i32 = 1024;

/// Binds `count` listeners on `addr`. Fails like a plain bind would when the address is taken,
/// even by another process using `SO_REUSEPORT`.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    // A plain bind first: it fails if anyone holds the port, where a reuse-port bind would
    // silently share it. It also resolves port 0 to a real port.
    let probe = socket(addr, false)?;
    let addr = probe.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    drop(probe);
    (0..count).map(|_| socket(addr, true).map(Into::into)).collect()
}

fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if reuse_port {
        socket.listen(BACKLOG)?;
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_several_on_one_port_and_refuses_a_taken_one() {
        let listeners = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let a = listeners[0].local_addr().unwrap();
        assert_eq!(a, listeners[1].local_addr().unwrap());
        let err = bind(a, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
