//! The listening sockets: one SO_REUSEPORT socket per worker slot, bound and listening
//! before any worker starts, and held by the master for its whole life.
//!
//! Because the master keeps every socket open, a slot whose worker dies or is replaced
//! keeps its accept queue: connections the kernel hashed to it wait there until the
//! slot's next worker accepts them, instead of being refused.

use std::io::ErrorKind;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Why the port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Someone else listens there.
    #[error(
        "cannot listen on {addr}: the address is in use by another program; stop it or choose another --listen"
    )]
    InUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The address is not one of this host's.
    #[error("cannot listen on {addr}: the address is not available on this host; check --listen")]
    NotAvailable {
        /// The address.
        addr: SocketAddr,
    },
    /// Privileged port.
    #[error(
        "cannot listen on {addr}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    )]
    Denied {
        /// The address.
        addr: SocketAddr,
    },
    /// Anything else.
    #[error("cannot listen on {addr}: {source}")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

fn classify(addr: SocketAddr, e: std::io::Error) -> ListenError {
    match e.kind() {
        ErrorKind::AddrInUse => ListenError::InUse { addr },
        ErrorKind::AddrNotAvailable => ListenError::NotAvailable { addr },
        ErrorKind::PermissionDenied => ListenError::Denied { addr },
        _ => ListenError::Other { addr, source: e },
    }
}

/// Binds `count` SO_REUSEPORT listening sockets on `addr` (all on the same port, even
/// when `addr` asks for port 0).
pub fn bind(addr: SocketAddr, count: usize, backlog: u32) -> Result<Vec<Socket>, ListenError> {
    if addr.port() != 0 {
        probe(addr)?;
    }
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = open(bound, backlog).map_err(|e| classify(bound, e))?;
        if bound.port() == 0 {
            bound = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .ok_or_else(|| classify(addr, std::io::Error::other("no local address")))?;
        }
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Fails if something already listens on `addr`. Sockets that all set SO_REUSEPORT
/// (and share a uid) may bind the same port, so without this check a second fleet would
/// silently share the port with the first; a plain bind tells us.
fn probe(addr: SocketAddr) -> Result<(), ListenError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| classify(addr, e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| classify(addr, e))?;
    socket.bind(&addr.into()).map_err(|e| classify(addr, e))
}

fn open(addr: SocketAddr, backlog: u32) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gives_every_slot_the_same_port() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 3, 16).unwrap();
        let ports: Vec<u16> = socks
            .iter()
            .map(|s| s.local_addr().unwrap().as_socket().unwrap().port())
            .collect();
        assert!(ports[0] != 0);
        assert!(ports.iter().all(|p| *p == ports[0]));
    }

    #[test]
    fn a_port_in_use_is_reported_as_such() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr, 2, 16).unwrap_err();
        assert!(matches!(err, ListenError::InUse { .. }), "{err}");
    }
}
