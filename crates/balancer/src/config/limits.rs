//! Limits and timeouts of the edge, in the shape users know from HAProxy
//! and nginx, each with a default that is safe on a public edge.
//!
//! Client side: a client must keep making progress at whatever it is
//! expected to do (send its headers, send its body, read the response, or
//! start its next request), or its connection is closed. Upstream side: a
//! replica must answer within `--response-timeout` of receiving the whole
//! request and keep its body flowing. A failure on one side is counted
//! against that side only.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;

/// Limits and timeouts (see the module doc).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits and timeouts")]
pub struct Limits {
    /// Most client connections open at once; at the cap, new connections
    /// wait in the listen backlog (HAProxy maxconn). Lowered at start to
    /// what the file-descriptor limit allows.
    #[arg(long, env = "LB_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Largest request head (request line and headers) a client may send;
    /// a larger one is answered 431 (HAProxy tune.bufsize, nginx
    /// large_client_header_buffers). At least 8192.
    #[arg(long, env = "LB_MAX_HEADER_SIZE", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(8192..))]
    pub max_header_size: u64,
    /// How long a client may take to send a request's headers (HAProxy
    /// timeout http-request).
    #[arg(long, env = "LB_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// How long a kept-alive client connection may stay idle between
    /// requests (HAProxy timeout http-keep-alive, nginx keepalive_timeout).
    #[arg(long, env = "LB_CLIENT_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub client_idle_timeout: Duration,
    /// Longest pause between two reads of a request body (nginx
    /// client_body_timeout); then 408 and the connection is closed.
    #[arg(long, env = "LB_CLIENT_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub client_body_timeout: Duration,
    /// Slowest average upload a request body may arrive at, in bytes per
    /// second, once it has had `--client-body-grace` (0: no minimum).
    #[arg(long, env = "LB_CLIENT_BODY_MIN_RATE", default_value_t = 240)]
    pub client_body_min_rate: u64,
    /// How long a request body may arrive slower than the minimum rate.
    #[arg(long, env = "LB_CLIENT_BODY_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub client_body_grace: Duration,
    /// Longest a write to a client may wait because it does not read
    /// (nginx send_timeout); then the connection is closed.
    #[arg(long, env = "LB_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub send_timeout: Duration,
    /// Timeout to connect to a replica.
    #[arg(long, env = "LB_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Time from the whole request reaching a replica until its response
    /// headers arrive (the upstream's first byte); then 504.
    #[arg(long, env = "LB_RESPONSE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub response_timeout: Duration,
    /// Longest pause in a replica's response body (HAProxy timeout
    /// server); then the response is cut off and the replica blamed.
    #[arg(long, env = "LB_UPSTREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_idle_timeout: Duration,
    /// Longest silence, both ways, on an upgraded connection (WebSocket)
    /// before it is closed (HAProxy timeout tunnel).
    #[arg(long, env = "LB_TUNNEL_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub tunnel_timeout: Duration,
    /// Most requests in flight to one replica (0: no limit); more wait for
    /// up to `--queue-timeout` (HAProxy server maxconn and queue).
    #[arg(long, env = "LB_MAX_CONNS_PER_REPLICA", default_value_t = 0)]
    pub max_conns_per_replica: usize,
    /// How long a request may wait for a replica under
    /// `--max-conns-per-replica` before it is answered 503.
    #[arg(long, env = "LB_QUEUE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Most HTTP/2 streams a client may have open at once on a connection
    /// (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "LB_H2_MAX_STREAMS", default_value_t = 100)]
    pub h2_max_streams: u32,
    /// HTTP/2 flow-control window of each stream, in bytes (what a client
    /// may send before the balancer has passed it on).
    #[arg(long, env = "LB_H2_STREAM_WINDOW", default_value_t = 256 * 1024)]
    pub h2_stream_window: u32,
    /// HTTP/2 flow-control window of a whole connection, in bytes.
    #[arg(long, env = "LB_H2_CONNECTION_WINDOW", default_value_t = 1024 * 1024)]
    pub h2_connection_window: u32,
    /// Requests a connection may abandon before their answer (HTTP/2 stream
    /// resets) before it is closed, once they are also more than half of
    /// its requests: the Rapid Reset bound (CVE-2023-44487).
    #[arg(long, env = "LB_MAX_ABANDONED", default_value_t = 100)]
    pub max_abandoned: u32,
}

/// The limits as `/lb/status` shows them: durations in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LimitsStatus {
    pub max_connections: usize,
    pub max_header_size: u64,
    pub header_read_timeout_ms: u64,
    pub client_idle_timeout_ms: u64,
    pub client_body_timeout_ms: u64,
    pub client_body_min_rate: u64,
    pub client_body_grace_ms: u64,
    pub send_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub response_timeout_ms: u64,
    pub upstream_idle_timeout_ms: u64,
    pub tunnel_timeout_ms: u64,
    pub max_conns_per_replica: usize,
    pub queue_timeout_ms: u64,
    pub h2_max_streams: u32,
    pub h2_stream_window: u32,
    pub h2_connection_window: u32,
    pub max_abandoned: u32,
}

impl Limits {
    /// What `/lb/status` shows; `max_connections` as in effect.
    pub fn status(&self, max_connections: usize) -> LimitsStatus {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        LimitsStatus {
            max_connections,
            max_header_size: self.max_header_size,
            header_read_timeout_ms: ms(self.header_read_timeout),
            client_idle_timeout_ms: ms(self.client_idle_timeout),
            client_body_timeout_ms: ms(self.client_body_timeout),
            client_body_min_rate: self.client_body_min_rate,
            client_body_grace_ms: ms(self.client_body_grace),
            send_timeout_ms: ms(self.send_timeout),
            connect_timeout_ms: ms(self.connect_timeout),
            response_timeout_ms: ms(self.response_timeout),
            upstream_idle_timeout_ms: ms(self.upstream_idle_timeout),
            tunnel_timeout_ms: ms(self.tunnel_timeout),
            max_conns_per_replica: self.max_conns_per_replica,
            queue_timeout_ms: ms(self.queue_timeout),
            h2_max_streams: self.h2_max_streams,
            h2_stream_window: self.h2_stream_window,
            h2_connection_window: self.h2_connection_window,
            max_abandoned: self.max_abandoned,
        }
    }
}
