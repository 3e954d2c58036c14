//! The edge's limits: what one request, one caller and one WebSocket
//! connection may take (docs/operations.md, "Limits at the edge").

use std::time::Duration;

use clap::Args;

use super::parse_duration;

/// What one request, one caller and one WebSocket connection may take at
/// the edge (docs/operations.md, "Limits at the edge").
#[derive(Debug, Args, Clone)]
pub struct EdgeLimits {
    /// Deepest nesting any operation may have, introspection included.
    #[arg(long, env = "CONVEYOR_MAX_DEPTH", default_value_t = QUERY.max_depth, global = true)]
    pub max_depth: usize,
    /// Highest complexity (a connection costs its page size times its children).
    #[arg(long, env = "CONVEYOR_MAX_COMPLEXITY", default_value_t = QUERY.max_complexity, global = true)]
    pub max_complexity: usize,
    /// Most fields one document may select, fragments counted where spread.
    #[arg(long, env = "CONVEYOR_MAX_FIELDS", default_value_t = QUERY.max_fields, global = true)]
    pub max_fields: usize,
    /// Most aliased fields one document may select.
    #[arg(long, env = "CONVEYOR_MAX_ALIASES", default_value_t = QUERY.max_aliases, global = true)]
    pub max_aliases: usize,
    /// Largest answer one operation may send, in bytes.
    #[arg(long, env = "CONVEYOR_MAX_RESPONSE_BYTES", default_value_t = QUERY.max_response_bytes, global = true)]
    pub max_response_bytes: usize,
    /// Operations per second per caller (token subject, else IP address),
    /// over HTTP, WebSocket and gRPC; 0 turns rate limiting off.
    #[arg(long, env = "CONVEYOR_RATE_LIMIT", default_value_t = RATE.per_second, global = true)]
    pub rate_limit: u32,
    /// Operations a caller may send at once before the rate applies (0: one second's worth).
    #[arg(long, env = "CONVEYOR_RATE_LIMIT_BURST", default_value_t = RATE.burst, global = true)]
    pub rate_limit_burst: u32,
    /// The header a trusted proxy in front puts the client's address in
    /// (e.g. x-forwarded-for; its last entry is taken), for rate limits and
    /// connection caps. Unset: the peer's address. Set it only when every
    /// request comes through that proxy.
    #[arg(long, env = "CONVEYOR_CLIENT_IP_HEADER", value_parser = parse_header_name, global = true)]
    pub client_ip_header: Option<gateway::HeaderName>,
    /// WebSocket: subscriptions one connection may run at once.
    #[arg(long, env = "CONVEYOR_WS_MAX_SUBSCRIPTIONS", default_value_t = WS.max_subscriptions, global = true)]
    pub ws_max_subscriptions: usize,
    /// WebSocket: largest message a client may send, in bytes (then 1009).
    #[arg(long, env = "CONVEYOR_WS_MAX_MESSAGE_BYTES", default_value_t = WS.max_message_bytes, global = true)]
    pub ws_max_message_bytes: usize,
    /// WebSocket: messages queued for a client before sending waits.
    #[arg(long, env = "CONVEYOR_WS_SEND_QUEUE", default_value_t = WS.send_queue, global = true)]
    pub ws_send_queue: usize,
    /// WebSocket: how long a client may leave a message untaken before it
    /// is disconnected as too slow (1013).
    #[arg(long, env = "CONVEYOR_WS_SEND_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    pub ws_send_timeout: Duration,
    /// WebSocket: open connections per client IP address (0: no limit).
    #[arg(long, env = "CONVEYOR_WS_MAX_CONNECTIONS_PER_IP", default_value_t = WS.max_connections_per_ip, global = true)]
    pub ws_max_connections_per_ip: usize,
    /// WebSocket: open connections per token subject (0: no limit).
    #[arg(long, env = "CONVEYOR_WS_MAX_CONNECTIONS_PER_SUBJECT", default_value_t = WS.max_connections_per_subject,
          global = true)]
    pub ws_max_connections_per_subject: usize,
}

const QUERY: gateway::QueryLimits = gateway::QueryLimits::DEFAULT;
const RATE: gateway::RateLimitSettings = gateway::RateLimitSettings::DEFAULT;
const WS: gateway::WsSettings = gateway::WsSettings::DEFAULT;

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_depth: QUERY.max_depth,
            max_complexity: QUERY.max_complexity,
            max_fields: QUERY.max_fields,
            max_aliases: QUERY.max_aliases,
            max_response_bytes: QUERY.max_response_bytes,
            rate_limit: RATE.per_second,
            rate_limit_burst: RATE.burst,
            client_ip_header: None,
            ws_max_subscriptions: WS.max_subscriptions,
            ws_max_message_bytes: WS.max_message_bytes,
            ws_send_queue: WS.send_queue,
            ws_send_timeout: WS.send_timeout,
            ws_max_connections_per_ip: WS.max_connections_per_ip,
            ws_max_connections_per_subject: WS.max_connections_per_subject,
        }
    }
}

impl EdgeLimits {
    pub fn query_limits(&self) -> gateway::QueryLimits {
        gateway::QueryLimits {
            max_depth: self.max_depth,
            max_complexity: self.max_complexity,
            max_fields: self.max_fields,
            max_aliases: self.max_aliases,
            max_response_bytes: self.max_response_bytes,
        }
    }

    pub fn websocket(&self, init_timeout: Duration, ping_interval: Duration) -> gateway::WsSettings {
        gateway::WsSettings {
            init_timeout,
            ping_interval,
            max_subscriptions: self.ws_max_subscriptions,
            max_message_bytes: self.ws_max_message_bytes,
            send_queue: self.ws_send_queue,
            send_timeout: self.ws_send_timeout,
            max_connections_per_ip: self.ws_max_connections_per_ip,
            max_connections_per_subject: self.ws_max_connections_per_subject,
        }
    }
}

fn parse_header_name(text: &str) -> Result<gateway::HeaderName, String> {
    gateway::HeaderName::from_bytes(text.trim().as_bytes()).map_err(|_| format!("`{text}` is not a header name"))
}
