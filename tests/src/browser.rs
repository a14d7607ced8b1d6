//! Headless Chromium driven through WebDriver: Debian's `chromium` and `chromium-driver`
//! (`scripts/ensure-tools` installs them), chromedriver on a loopback port it picks itself, a
//! fresh profile per browser, and the flags this machine needs (no sandbox as root, no
//! background networking: nothing leaves loopback).

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;

/// A Chromium session. Dropping it kills chromedriver and the browser it started.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: smrtshare_testkit::tempfile::TempDir,
}

/// The first of `names` on PATH, or at `/usr/bin/<name>`.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/bin")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Reads chromedriver's stdout until it names its port.
fn driver_port(stdout: ChildStdout) -> anyhow::Result<u16> {
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .context("chromedriver exited before it listened")??;
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            break rest.trim_end_matches('.').trim().parse::<u16>()?;
        }
    };
    // Keep draining what it prints, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(port)
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at `width` x `height`. `None` (with a notice)
    /// when they are not installed, except under `CI=true`, where that fails the test.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Option<Self>> {
        let (Some(chromium), Some(chromedriver)) = (
            find(&["chromium", "chromium-browser"]),
            find(&["chromedriver"]),
        ) else {
            assert!(
                !smrtshare_testkit::is_ci(),
                "chromium or chromedriver is not installed (CI=true: the browser test must run; \
                 scripts/ensure-tools installs Debian's chromium and chromium-driver)"
            );
            eprintln!(
                "NOTICE: skipping: chromium and chromedriver are not installed \
                 (scripts/ensure-tools installs them)"
            );
            return Ok(None);
        };
        let profile = smrtshare_testkit::tempfile::Builder::new()
            .prefix("smrtshare-chromium-")
            .tempdir()?;
        // Its own process group, so that the browser it starts dies with it.
        let mut driver = Command::new(&chromedriver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let stdout = driver.stdout.take().context("chromedriver's stdout")?;
        let port = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::task::spawn_blocking(move || driver_port(stdout)),
        )
        .await;
        let port = match port {
            Ok(Ok(Ok(port))) => port,
            failed => {
                kill_group(&mut driver);
                bail!("chromedriver named no port within 30 s: {failed:?}");
            }
        };
        let browser = Self::connect(&chromium, profile.path(), port, width, height).await;
        match browser {
            Ok(client) => Ok(Some(Self {
                client,
                driver,
                _profile: profile,
            })),
            Err(error) => {
                kill_group(&mut driver);
                Err(error)
            }
        }
    }

    async fn connect(
        chromium: &Path,
        profile: &Path,
        port: u16,
        width: u32,
        height: u32,
    ) -> anyhow::Result<Client> {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .context("opening a WebDriver session")?;
        Ok(client)
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sets the viewport (the page's layout width) to `width` x `height` CSS pixels, and checks
    /// the page sees it.
    pub async fn viewport(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.client.set_window_size(width, height).await?;
        let seen = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await?;
        if seen[0].as_u64() != Some(u64::from(width)) {
            bail!("asked for a {width} px wide viewport, the page sees {seen:?}");
        }
        Ok(())
    }

    /// Sizes the window `width` CSS pixels wide and as tall as the whole page (at most 4000 px),
    /// for a screenshot of all of it.
    pub async fn fit_page(&self, width: u32) -> anyhow::Result<()> {
        self.viewport(width, 900).await?;
        let sizes = self
            .client
            .execute(
                "return [window.outerHeight - window.innerHeight,
                         document.documentElement.scrollHeight];",
                vec![],
            )
            .await?;
        let frame = sizes[0].as_u64().context("window heights")?;
        let page = sizes[1].as_u64().context("page height")?;
        let height = u32::try_from((frame + page).min(4000))?;
        self.client.set_window_size(width, height).await?;
        Ok(())
    }

    /// Ends the session (the browser quits) and stops chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let closed = self.client.clone().close().await;
        kill_group(&mut self.driver);
        Ok(closed?)
    }
}

fn kill_group(driver: &mut Child) {
    if let Ok(id) = i32::try_from(driver.id())
        && let Some(pid) = rustix::process::Pid::from_raw(id)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = driver.kill();
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
