//! A throw-away PostgreSQL cluster for the tests that need a real server (a catalog on PostgreSQL, several
//! replicas): `initdb` into a temporary directory, the server on a free loopback port and nowhere else, run as the
//! unprivileged user `postgres` when the tests run as root (PostgreSQL refuses root), stopped and removed when
//! dropped. scripts/tools.d/postgresql.sh installs the programs.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

/// A running throw-away cluster.
pub struct Postgres {
    dir: TempDir,
    child: Child,
    port: u16,
}

/// A PostgreSQL program: from `PATH`, else from the newest `/usr/lib/postgresql/*/bin` (where Debian puts them).
fn program(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin").join(name))
                .filter(|candidate| candidate.is_file())
                .collect();
            versions.sort_by_key(|p| {
                p.components()
                    .nth(4)
                    .and_then(|c| c.as_os_str().to_str()?.parse::<u32>().ok())
                    .unwrap_or(0)
            });
            versions.pop()
        })
        .unwrap_or_else(|| {
            panic!("PostgreSQL's {name} is missing: scripts/tools.d/postgresql.sh installs it")
        })
}

/// The user the server runs as when the tests run as root: `postgres`, which the Debian package creates.
fn unprivileged() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("the postgres user exists: scripts/tools.d/postgresql.sh installs the package that creates it");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn command(name: &str, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(program(name));
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the server of the cluster in `data` on `port`, its socket in `dir`; returns once it accepts connections.
fn serve(data: &Path, dir: &Path, port: u16, user: Option<(u32, u32)>) -> Child {
    let mut child = command("postgres", user)
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .args([
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ready when the server says so in its log, not after a sleep.
    let log = Arc::new(Mutex::new(Vec::new()));
    let (ready, is_ready) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ready to accept connections") {
                let _ = ready.send(());
            }
            sink.lock().unwrap().push(line);
        }
    });
    if is_ready.recv_timeout(Duration::from_mins(1)).is_err() {
        let _ = child.kill();
        panic!("PostgreSQL did not start: {:#?}", log.lock().unwrap());
    }
    child
}

impl Postgres {
    /// Creates and starts a cluster whose superuser `rpod` connects from loopback without a password.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let user = unprivileged();
        if let Some((uid, gid)) = user {
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .unwrap();
        }
        let data = dir.path().join("data");
        let initdb = command("initdb", user)
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username",
                "rpod",
                "--auth",
                "trust",
                "--no-sync",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
            ])
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_port();
        let child = serve(&data, dir.path(), port, user);
        Self { dir, child, port }
    }

    /// Stops the server (fast shutdown: clients are cut off), keeping its data, as an outage would.
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }

    /// Starts the stopped server again on the same port with the same data.
    pub fn start_again(&mut self) {
        self.child = serve(
            &self.dir.path().join("data"),
            self.dir.path(),
            self.port,
            unprivileged(),
        );
    }

    /// A new, empty database `name`, and its URL.
    pub async fn database(&self, name: &str) -> String {
        let pool = sqlx::PgPool::connect(&self.url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        format!(
            "postgres://rpod@127.0.0.1:{}/{name}?sslmode=disable",
            self.port
        )
    }

    /// The connection URL of the superuser `rpod` to database `postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://rpod@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: clients are disconnected and the server exits at once.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_throw_away_cluster_serves_on_loopback_only_and_is_gone_after_the_test() {
    let postgres = Postgres::start();
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    let (listen,): (String,) = sqlx::query_as("SHOW listen_addresses")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(listen, "127.0.0.1", "nothing but loopback");
    let (user,): (String,) = sqlx::query_as("SELECT current_user::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(user, "rpod");
    pool.close().await;

    let (pid, dir) = (postgres.pid(), postgres.dir().to_owned());
    drop(postgres);
    assert!(
        !crate::support::process_alive(pid),
        "the server was stopped"
    );
    assert!(!dir.exists(), "its directory was removed");
}
