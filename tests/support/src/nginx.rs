//! A real nginx (Debian's package) as a reverse proxy or round-robin load balancer in front of
//! loopback backends: no stickiness, streaming answers unbuffered, as an ingress is set up for
//! SSE. Used by the replica test (three gateways) and the allow-path bench (a bare hop).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The nginx binary: `NGINX` if set, else the Debian package's.
fn nginx_bin() -> PathBuf {
    std::env::var_os("NGINX").map_or_else(|| PathBuf::from("/usr/sbin/nginx"), PathBuf::from)
}

/// One nginx process of this test, killed on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx balancing over `backends` (loopback ports) in `dir`, with up to `keepalive`
    /// idle connections kept to them (0: a new one per request); waits until it listens.
    pub async fn start(dir: &std::path::Path, backends: &[u16], keepalive: u32) -> Nginx {
        let bin = nginx_bin();
        assert!(
            bin.exists(),
            "nginx is not installed at {} (apt-get install nginx-light; .ci/run does this)",
            bin.display()
        );
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let port = free_port();
        let servers: String = backends
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;\n"))
            .collect();
        let pool = if keepalive > 0 {
            format!("    keepalive {keepalive};\n")
        } else {
            String::new()
        };
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream gateways {{
{servers}{pool}  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
      proxy_connect_timeout 2s;
      # A replica that refuses the connection is skipped (nothing reached it); a request that
      # reached one is never replayed by the balancer: the client retries.
      proxy_next_upstream error timeout;
    }}
  }}
}}
"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(&bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start nginx ({}): {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port}: {}",
                std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Nginx { child, port, dir }
    }

    /// The MCP endpoint behind the proxy.
    pub fn mcp_url(&self) -> String {
        self.url("/mcp")
    }

    /// `path` behind the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's error log (upstream failures show here).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Through the master, so that its workers go too (a killed master leaves them running).
        let stopped = std::process::Command::new(nginx_bin())
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", "stop"])
            .stderr(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            let _ = self.child.start_kill();
        }
    }
}
