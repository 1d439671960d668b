//! `deepemotion serve --dev` on 127.0.0.1 for the tests that talk to it over the network, and an
//! account on it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// `http://{addr}/api/v2`
    pub base: String,
    pub data_dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server on a fresh data directory with these extra arguments and environment, and
/// returns once it accepts connections (it prints its address then).
pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepemotion"))
        .args(["serve", "--dev", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .expect("deepemotion serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Server {
        child,
        addr,
        base: url.trim_end_matches('/').to_string(),
        data_dir,
    }
}

/// Registers `name` (`{name}@example.com`, password `password123`) and logs in: the token.
pub fn login(http: &Client, base: &str, name: &str) -> String {
    let email = format!("{name}@example.com");
    let r = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": name, "email": email, "password": "password123"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": "password123"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    r["access_token"].as_str().unwrap().to_string()
}
