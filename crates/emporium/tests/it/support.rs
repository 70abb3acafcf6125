//! Starting the real binary for a test.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const BINARY: &str = env!("CARGO_BIN_EXE_emporium");

/// A running platform, killed when dropped.
pub struct Platform {
    pub child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

/// The binary with the test profile and a data dir; the caller adds what it needs.
pub fn command(data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("EMPORIUM_PROFILE", "test")
        .env("EMPORIUM_DATA_DIR", data_dir)
        .env(
            "EMPORIUM_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

impl Platform {
    /// Starts the platform on a fresh temporary data directory.
    pub async fn start() -> Platform {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        let mut platform = Platform::start_in(&data_dir, &[]).await;
        platform._dir = Some(dir);
        platform
    }

    /// Starts the platform on `data_dir` with extra environment.
    pub async fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Platform {
        let mut command = command(data_dir);
        command
            .envs(env.iter().copied())
            .stdout(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        command.stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let address = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("Emporium is up on http://") {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
                eprintln!("emporium: {line}");
            }
            panic!("the platform exited before it was up");
        })
        .await
        .expect("the platform came up in time");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Platform {
            child,
            base: format!("http://{address}"),
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the platform stopped in time")
            .unwrap()
    }
}
