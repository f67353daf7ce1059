//! A session: what a tracer (`userbpf exec`) shares with the processes it
//! traces. A private directory (mode 0700, under `/dev/shm`) holds the
//! maps as 0600 files and the control socket; the agent in each traced
//! process connects to the socket and reports on it (what it attached,
//! what failed, `bpf_trace_printk` output). The tracer accepts only peers
//! running as its own user (or root), checked with `SO_PEERCRED`.
//!
//! The protocol is lines of text: a word, a space, the rest (no newline
//! inside: [`escape`] it).

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The environment variable that names the session directory for the
/// agent.
pub const SESSION_ENV: &str = "USERBPF_SESSION";
/// The control socket's name in the session directory.
pub const CONTROL_SOCKET: &str = "control";

/// A session directory, removed (with what it holds) when dropped.
#[derive(Debug)]
pub struct SessionDir {
    path: PathBuf,
}

impl SessionDir {
    /// Creates a new private directory under `root` (`/dev/shm` when
    /// `None`), mode 0700.
    pub fn create(root: Option<&Path>) -> io::Result<SessionDir> {
        let root = root.unwrap_or(Path::new("/dev/shm"));
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = root.join(format!("userbpf-{pid}-{nanos:x}{attempt}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    // (The umask cannot widen 0700, but be explicit.)
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
                    return Ok(SessionDir { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free session directory name",
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The control socket's path.
    pub fn control_path(&self) -> PathBuf {
        self.path.join(CONTROL_SOCKET)
    }
}

impl Drop for SessionDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The credentials of a socket's peer (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// The peer credentials of a connected Unix socket.
pub fn peer_cred(stream: &UnixStream) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket fd and an out-buffer of the size given.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// The tracer's end: a listening socket in the session directory (mode
/// 0600).
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
}

/// A connection the server refused, and why.
#[derive(Debug)]
pub struct Refused {
    /// The peer.
    pub cred: PeerCred,
    /// Why.
    pub reason: String,
}

impl ControlServer {
    /// Listens at `path` (non-blocking accepts).
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlServer { listener })
    }

    /// Accepts the connections waiting: peers running as this process's
    /// user or as root are returned, others are closed and reported.
    pub fn accept_pending(&self) -> (Vec<ControlPeer>, Vec<Refused>) {
        let mut ok = Vec::new();
        let mut refused = Vec::new();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        while let Ok((stream, _)) = self.listener.accept() {
            let cred = match peer_cred(&stream) {
                Ok(c) => c,
                Err(e) => {
                    refused.push(Refused {
                        cred: PeerCred {
                            pid: 0,
                            uid: u32::MAX,
                            gid: u32::MAX,
                        },
                        reason: format!("SO_PEERCRED: {e}"),
                    });
                    continue;
                }
            };
            if cred.uid != me && cred.uid != 0 {
                refused.push(Refused {
                    cred,
                    reason: format!(
                        "process {} runs as uid {}, not {me}: refused",
                        cred.pid, cred.uid
                    ),
                });
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            ok.push(ControlPeer {
                cred,
                reader: BufReader::new(stream),
                partial: String::new(),
                closed: false,
            });
        }
        (ok, refused)
    }
}

/// A connected agent, as the tracer sees it.
#[derive(Debug)]
pub struct ControlPeer {
    /// Its credentials.
    pub cred: PeerCred,
    reader: BufReader<UnixStream>,
    partial: String,
    closed: bool,
}

impl ControlPeer {
    /// The complete lines received so far (non-blocking).
    pub fn read_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.reader.read_line(&mut self.partial) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(_) => {
                    if self.partial.ends_with('\n') {
                        let line = std::mem::take(&mut self.partial);
                        out.push(line.trim_end_matches('\n').to_string());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        out
    }

    /// Whether the peer closed its end.
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

/// The agent's end of the control channel.
#[derive(Debug)]
pub struct ControlClient {
    stream: std::sync::Mutex<UnixStream>,
}

impl ControlClient {
    /// Connects to the session's control socket.
    pub fn connect(session_dir: &Path) -> io::Result<ControlClient> {
        let stream = UnixStream::connect(session_dir.join(CONTROL_SOCKET))?;
        Ok(ControlClient {
            stream: std::sync::Mutex::new(stream),
        })
    }

    /// Sends one message: `word` then `text` (escaped).
    pub fn send(&self, word: &str, text: &str) -> io::Result<()> {
        let line = format!("{word} {}\n", escape(text));
        let mut s = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("control channel lock poisoned"))?;
        s.write_all(line.as_bytes())
    }
}

/// `text` on one line: backslashes and newlines escaped (`\\`, `\n`).
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The inverse of [`escape`].
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for s in ["", "a b", "line\nnext", "back\\slash\\n", "\n\n\\"] {
            assert_eq!(unescape(&escape(s)), s);
            assert!(!escape(s).contains('\n'));
        }
    }

    #[test]
    fn the_server_receives_lines_from_a_client_with_its_credentials() {
        let dir = SessionDir::create(Some(&std::env::temp_dir())).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let server = ControlServer::bind(&dir.control_path()).unwrap();
        let mode = std::fs::metadata(dir.control_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let client = ControlClient::connect(dir.path()).unwrap();
        client.send("hello", "one\ntwo").unwrap();
        client.send("attached", "x").unwrap();
        let mut peers = Vec::new();
        for _ in 0..100 {
            peers.extend(server.accept_pending().0);
            if !peers.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(peers.len(), 1);
        // SAFETY: getpid/getuid have no preconditions.
        let (pid, uid) = unsafe { (libc::getpid(), libc::getuid()) };
        assert_eq!((peers[0].cred.pid, peers[0].cred.uid), (pid, uid));
        let mut lines = Vec::new();
        for _ in 0..100 {
            lines.extend(peers[0].read_lines());
            if lines.len() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(lines, vec!["hello one\\ntwo", "attached x"]);
        drop(client);
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists(), "the session directory is removed");
    }

    #[test]
    fn a_peer_running_as_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIP: needs root to connect as another user");
            return;
        }
        let dir = SessionDir::create(Some(&std::env::temp_dir())).unwrap();
        let server = ControlServer::bind(&dir.control_path()).unwrap();
        // Let `nobody` reach the socket: the uid check must be what
        // refuses it (the directory's 0700 would stop it first).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.control_path(), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        let path = std::ffi::CString::new(dir.control_path().to_str().unwrap()).unwrap();
        // SAFETY: the child only drops to uid 65534, connects, writes and
        // leaves with _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: plain syscalls on a valid path and a zeroed address.
            unsafe {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    libc::_exit(2);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let mut addr: libc::sockaddr_un = std::mem::zeroed();
                addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (i, b) in path.as_bytes().iter().enumerate() {
                    addr.sun_path[i] = *b as libc::c_char;
                }
                let ok = libc::connect(
                    fd,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                ) == 0;
                let msg = b"hello intruder\n";
                libc::write(fd, msg.as_ptr().cast(), msg.len());
                libc::_exit(if ok { 0 } else { 3 });
            }
        }
        let mut status = 0;
        // SAFETY: our child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0, "the child connected");
        let mut refused = Vec::new();
        let mut accepted = 0;
        for _ in 0..100 {
            let (ok, r) = server.accept_pending();
            accepted += ok.len();
            refused.extend(r);
            if !refused.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(accepted, 0);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].cred.uid, 65534);
        assert!(
            refused[0].reason.contains("uid 65534"),
            "{}",
            refused[0].reason
        );
    }
}
