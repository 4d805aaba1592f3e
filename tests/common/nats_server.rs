//! A private NATS server for the tests that restart one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A nats-server with JetStream of one test's own: a free port, its store where the test
/// says. One to restart without disturbing the server every other test shares.
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start(store: &Path) -> Result<NatsServer, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let mut server = NatsServer {
            port,
            store: store.to_owned(),
            child: None,
        };
        server.run()?;
        Ok(server)
    }

    fn run(&mut self) -> Result<(), String> {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start nats-server ({e}). A test that restarts the server starts one \
                     of its own: run `.ci/nats`, which installs nats-server."
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("nats-server did not answer on port {}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server with SIGTERM, as a restart does, and starts it again after `down`.
    pub fn restart(&mut self, down: Duration) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .arg(child.id().to_string())
                .status()
                .map_err(|e| format!("kill: {e}"))?;
            child.wait().map_err(|e| format!("nats-server: {e}"))?;
        }
        std::thread::sleep(down);
        self.run()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
