//! The client-side TCP sockets to a loopback port, as the kernel lists them: how tests count
//! the connections a client holds open, which the server's own count can overstate (it sees a
//! close only when it next reads).

/// The /proc/net/tcp rows counted by [`open_client_sockets`] (for failure messages).
pub fn client_socket_rows(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .filter(|l| l.contains(&remote))
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Client-side TCP sockets to 127.0.0.1:`port` that are open (SYN_SENT, ESTABLISHED or
/// CLOSE_WAIT), as the kernel lists them in /proc/net/tcp. Sockets the client has closed
/// (FIN_WAIT, TIME_WAIT, LAST_ACK) do not count; the server's own ends (local port `port`) are
/// skipped.
///
/// The file is generated a page per read, so one reading is not a snapshot: a busy table can
/// list a socket twice, or list one that was closed while a later page lists the one opened
/// after it. Sockets are therefore identified by local address, and a reading of more than
/// `at_most` is confirmed by a second one: only sockets both list count.
pub fn open_client_sockets(port: u16, at_most: usize) -> usize {
    let first = client_sockets(port);
    if first.len() <= at_most {
        return first.len();
    }
    let second = client_sockets(port);
    first.intersection(&second).count()
}

/// The local addresses of the sockets [`open_client_sockets`] counts, in one reading.
fn client_sockets(port: u16) -> std::collections::HashSet<String> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return Default::default();
    };
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 3 && f[2] == remote && matches!(f[3], "01" | "02" | "08"))
                .then(|| f[1].to_owned())
        })
        .collect()
}
