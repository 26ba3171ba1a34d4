//! Telling the service manager how the daemon is doing: systemd's notification protocol (`sd_notify`), spoken
//! directly over its Unix datagram socket.
//!
//! systemd names the socket in `NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`) and, when
//! the unit sets `WatchdogSec=`, the watchdog timeout in `WATCHDOG_USEC` (for the process in `WATCHDOG_PID`, when
//! set). Each message is one datagram of `KEY=VALUE` lines. rpod sends:
//!
//! | When | Message |
//! |---|---|
//! | the HTTP listener serves and the scheduler runs | `READY=1`, `STATUS=…` |
//! | with each scheduler heartbeat (`scheduler::Heartbeat`) after `READY=1`, when the watchdog is on | `WATCHDOG=1` |
//! | a SIGHUP reload begins | `RELOADING=1`, `MONOTONIC_USEC=…`, `STATUS=…` |
//! | the reload is done, accepted or rejected | `READY=1`, `STATUS=…` |
//! | shutdown begins | `STOPPING=1`, `STATUS=…`, then `EXTEND_TIMEOUT_USEC=…` |
//!
//! Without `NOTIFY_SOCKET` nothing is sent. A failed send is logged once, at WARN, and never stops the daemon.
//!
//! What does not live here: when to send (that is `app`'s wiring), and keeping the variables from the programs
//! rpod runs. rpod cannot remove them from its own environment (that is `unsafe` in Rust 2024, and the crate
//! forbids `unsafe`), so the `command` provider removes [`SERVICE_MANAGER_VARIABLES`] from each child's.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

/// The variables through which systemd talks to the process it started. Programs rpod runs must not see them:
/// they would be told to notify on rpod's behalf (and, with `NotifyAccess=all`, could).
pub const SERVICE_MANAGER_VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// How long one send may block when the service manager's queue is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends notifications to the service manager; does nothing when none asked for them. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `NOTIFY_SOCKET` as given, for messages.
    name: String,
    watchdog: Option<Duration>,
    /// Whether a failed send was already logged at WARN.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for the service manager named in this process's environment (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    /// `WATCHDOG_PID`). Disabled when `NOTIFY_SOCKET` is unset or empty; an unusable value is logged at WARN.
    #[must_use]
    pub fn from_env() -> Self {
        Self::from_values(
            std::env::var_os("NOTIFY_SOCKET").as_deref(),
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    fn from_values(
        socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        pid: u32,
    ) -> Self {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Self::default();
        };
        let watchdog = watchdog_timeout(watchdog_usec, watchdog_pid, pid);
        match Self::connect(socket, watchdog) {
            Ok(notifier) => {
                debug!(
                    socket = %socket.to_string_lossy(),
                    watchdog = ?watchdog,
                    "Notifying the service manager."
                );
                notifier
            }
            Err(err) => {
                warn!(
                    socket = %socket.to_string_lossy(),
                    error = %err,
                    "NOTIFY_SOCKET cannot be used; the service manager gets no notifications."
                );
                Self::default()
            }
        }
    }

    /// A notifier for the socket `socket` (a path, or `@name` for an abstract socket), with the watchdog timeout
    /// the service manager announced, if any.
    ///
    /// # Errors
    /// `socket` is neither an absolute path nor an abstract name, or no datagram socket could be created.
    pub fn connect(socket: &OsStr, watchdog: Option<Duration>) -> io::Result<Self> {
        let bytes = socket.as_bytes();
        let address = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(socket)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract socket name (@name)",
                ));
            }
        };
        let sender = UnixDatagram::unbound()?;
        sender.set_write_timeout(Some(SEND_TIMEOUT))?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                socket: sender,
                address,
                name: socket.to_string_lossy().into_owned(),
                watchdog,
                warned: AtomicBool::new(false),
            })),
        })
    }

    /// Whether a service manager listens.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The watchdog timeout the service manager enforces on this process, if any.
    #[must_use]
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.inner.as_ref().and_then(|inner| inner.watchdog)
    }

    /// Warns when heartbeats `interval` apart are too rare for the watchdog: more than half its timeout apart, one
    /// late heartbeat would get rpod restarted.
    pub fn check_heartbeat(&self, interval: Duration) {
        if let Some(watchdog) = self.watchdog_timeout()
            && heartbeat_too_rare(interval, watchdog)
        {
            warn!(
                evaluation_interval = %humantime::format_duration(interval),
                watchdog = %humantime::format_duration(watchdog),
                "daemon.evaluation_interval is too long for the service's watchdog (WatchdogSec=): rpod tells the \
                 watchdog it is alive with each scheduler heartbeat, at least every evaluation_interval. Keep \
                 evaluation_interval well below half of WatchdogSec, or one late heartbeat gets rpod restarted."
            );
        }
    }

    /// Start-up is complete, or a reload is done: `READY=1`.
    pub fn ready(&self, status: &str) {
        self.send(&["READY=1", &status_line(status)].join("\n"));
    }

    /// A reload begins: `RELOADING=1`, stamped with `CLOCK_MONOTONIC` so a `Type=notify-reload` unit can match it
    /// to the SIGHUP it sent. Follow it with [`Notifier::ready`].
    pub fn reloading(&self, status: &str) {
        let mut lines = vec!["RELOADING=1".to_owned()];
        if let Some(now) = monotonic_usec() {
            lines.push(format!("MONOTONIC_USEC={now}"));
        }
        lines.push(status_line(status));
        self.send(&lines.join("\n"));
    }

    /// The heartbeat: `WATCHDOG=1`, when the service manager watches this process.
    pub fn watchdog(&self) {
        if self.watchdog_timeout().is_some() {
            self.send("WATCHDOG=1");
        }
    }

    /// Shutdown begins: `STOPPING=1`, then a request to wait up to `within` from now before killing rpod (so a
    /// `shutdown_timeout` above the unit's `TimeoutStopSec=` is honoured). Two datagrams, so the extension applies
    /// to the stop timeout rather than to the running state's.
    pub fn stopping(&self, status: &str, within: Duration) {
        self.send(&["STOPPING=1", &status_line(status)].join("\n"));
        self.send(&format!("EXTEND_TIMEOUT_USEC={}", within.as_micros()));
    }

    fn send(&self, message: &str) {
        let Some(inner) = &self.inner else {
            return;
        };
        if let Err(err) = inner
            .socket
            .send_to_addr(message.as_bytes(), &inner.address)
        {
            if inner.warned.swap(true, Ordering::Relaxed) {
                debug!(socket = %inner.name, error = %err, "Could not notify the service manager.");
            } else {
                warn!(
                    socket = %inner.name,
                    error = %err,
                    "Could not notify the service manager; further failures are logged at DEBUG only."
                );
            }
        }
    }
}

/// The watchdog timeout from `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process (the variables were
/// meant for a parent and leaked to us).
fn watchdog_timeout(usec: Option<&OsStr>, for_pid: Option<&OsStr>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(for_pid) = for_pid.filter(|p| !p.is_empty())
        && for_pid.to_str().and_then(|p| p.trim().parse::<u32>().ok()) != Some(pid)
    {
        return None;
    }
    Some(Duration::from_micros(usec))
}

/// Whether pings `interval` apart leave less than one spare interval within the watchdog timeout.
fn heartbeat_too_rare(interval: Duration, watchdog: Duration) -> bool {
    interval.saturating_mul(2) > watchdog
}

/// `STATUS=` with the text on one line, as the protocol requires.
fn status_line(status: &str) -> String {
    format!("STATUS={}", status.replace(['\n', '\r'], " "))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares reload stamps with.
fn monotonic_usec() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let seconds = u64::try_from(now.tv_sec()).ok()?;
    let micros = u64::try_from(now.tv_nsec()).ok()? / 1_000;
    Some(seconds * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, socket, path)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_each_message_as_one_datagram_to_a_path() {
        let (_dir, socket, path) = listener();
        let notifier = Notifier::connect(path.as_os_str(), Some(Duration::from_mins(2))).unwrap();
        notifier.ready("Serving on 127.0.0.1:9464;\nthree targets.");
        assert_eq!(
            receive(&socket),
            "READY=1\nSTATUS=Serving on 127.0.0.1:9464; three targets."
        );
        notifier.watchdog();
        assert_eq!(receive(&socket), "WATCHDOG=1");
        let before = monotonic_usec().unwrap();
        notifier.reloading("Reloading.");
        let reloading = receive(&socket);
        let lines: Vec<&str> = reloading.lines().collect();
        assert_eq!(lines[0], "RELOADING=1");
        let stamp: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(stamp >= before && stamp <= monotonic_usec().unwrap());
        assert_eq!(lines[2], "STATUS=Reloading.");
        notifier.stopping("Stopping.", Duration::from_secs(75));
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=Stopping.");
        assert_eq!(receive(&socket), "EXTEND_TIMEOUT_USEC=75000000");
    }

    #[test]
    fn reaches_an_abstract_socket() {
        let name = format!("rpod-notify-test-{}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::from_values(
            Some(OsStr::new(&format!("@{name}"))),
            None,
            None,
            std::process::id(),
        );
        assert!(notifier.is_enabled());
        notifier.ready("ok");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=ok");
    }

    #[test]
    fn without_a_socket_nothing_is_enabled() {
        for socket in [None, Some(OsStr::new(""))] {
            let notifier = Notifier::from_values(socket, Some(OsStr::new("1000000")), None, 1);
            assert!(!notifier.is_enabled());
            assert_eq!(notifier.watchdog_timeout(), None);
            notifier.ready("nobody listens");
        }
    }

    #[test]
    fn an_unusable_socket_disables_notifications() {
        let notifier = Notifier::from_values(Some(OsStr::new("vsock:2:1234")), None, None, 1);
        assert!(!notifier.is_enabled());
    }

    #[test]
    fn a_failed_send_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let notifier = Notifier::connect(dir.path().join("gone.sock").as_os_str(), None).unwrap();
        notifier.ready("first failure warns");
        notifier.ready("later ones do not");
        assert!(
            notifier
                .inner
                .as_ref()
                .unwrap()
                .warned
                .load(Ordering::Relaxed)
        );
    }

    #[test]
    fn no_watchdog_pings_without_a_watchdog() {
        let (_dir, socket, path) = listener();
        let notifier = Notifier::connect(path.as_os_str(), None).unwrap();
        notifier.watchdog();
        notifier.ready("after");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=after");
    }

    #[test]
    fn the_watchdog_is_for_the_process_it_names() {
        let usec = Some(OsStr::new("120000000"));
        let two_minutes = Some(Duration::from_mins(2));
        assert_eq!(watchdog_timeout(usec, None, 42), two_minutes);
        assert_eq!(
            watchdog_timeout(usec, Some(OsStr::new("")), 42),
            two_minutes
        );
        assert_eq!(
            watchdog_timeout(usec, Some(OsStr::new("42")), 42),
            two_minutes
        );
        assert_eq!(watchdog_timeout(usec, Some(OsStr::new("41")), 42), None);
        assert_eq!(watchdog_timeout(usec, Some(OsStr::new("x")), 42), None);
        assert_eq!(watchdog_timeout(Some(OsStr::new("0")), None, 42), None);
        assert_eq!(watchdog_timeout(Some(OsStr::new("soon")), None, 42), None);
        assert_eq!(watchdog_timeout(None, Some(OsStr::new("42")), 42), None);
    }

    #[test]
    fn heartbeats_must_leave_a_spare_interval() {
        let watchdog = Duration::from_mins(5);
        assert!(!heartbeat_too_rare(Duration::from_secs(15), watchdog));
        assert!(!heartbeat_too_rare(Duration::from_mins(2), watchdog));
        assert!(heartbeat_too_rare(Duration::from_mins(3), watchdog));
    }
}
