//! `EventStore.StreamEvents` (docs/grpc.md): the gateway's settle window and
//! limits, and the write side's append deadline that the window rests on.

use std::time::Duration;

use clap::Args;

use super::parse_duration;

const STREAMS: gateway::grpc::EventStreamSettings = gateway::grpc::EventStreamSettings::DEFAULT;

/// How `StreamEvents` runs, and the write side's half of its guarantee.
#[derive(Debug, Args, Clone)]
pub struct StreamEventsArgs {
    /// Gateway: `StreamEvents` sends an event only once it is this old, when
    /// no append still in flight can be stamped before it. Must exceed
    /// --append-deadline plus the longest COMMIT plus the clock skew
    /// between writers and gateways.
    #[arg(long = "stream-events-settle", env = "CONVEYOR_STREAM_EVENTS_SETTLE", default_value = "10s",
          value_parser = parse_duration, global = true)]
    pub settle: Duration,
    /// Gateway: how often a stream that has sent everything settled looks again.
    #[arg(long = "stream-events-poll", env = "CONVEYOR_STREAM_EVENTS_POLL", default_value = "500ms",
          value_parser = parse_duration, global = true)]
    pub poll: Duration,
    /// Gateway: events queued per stream for its reader.
    #[arg(long = "stream-events-buffer", env = "CONVEYOR_STREAM_EVENTS_BUFFER", default_value_t = STREAMS.buffer,
          value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..=65_536), |n| n as usize),
          global = true)]
    pub buffer: usize,
    /// Gateway: how long a stream's queue may stay full before its reader is
    /// ended with RESOURCE_EXHAUSTED (READER_TOO_SLOW).
    #[arg(long = "stream-events-send-timeout", env = "CONVEYOR_STREAM_EVENTS_SEND_TIMEOUT", default_value = "5s",
          value_parser = parse_duration, global = true)]
    pub send_timeout: Duration,
    /// Gateway: `StreamEvents` calls one gateway runs at once.
    #[arg(long = "stream-events-max", env = "CONVEYOR_STREAM_EVENTS_MAX", default_value_t = STREAMS.max_streams,
          global = true)]
    pub max_streams: usize,
    /// Write side: longest an append may take from stamping its events to
    /// sending COMMIT; past it, it is rolled back and written again with
    /// new stamps.
    #[arg(long = "append-deadline", env = "CONVEYOR_APPEND_DEADLINE", default_value = "5s",
          value_parser = parse_duration, global = true)]
    pub append_deadline: Duration,
}

impl Default for StreamEventsArgs {
    fn default() -> Self {
        Self {
            settle: STREAMS.settle,
            poll: STREAMS.poll,
            buffer: STREAMS.buffer,
            send_timeout: STREAMS.send_timeout,
            max_streams: STREAMS.max_streams,
            append_deadline: write_side::APPEND_DEADLINE,
        }
    }
}

impl StreamEventsArgs {
    /// The gateway's settings; refused when the settle window does not
    /// exceed the append deadline (the one this process knows: keep the
    /// write sides' the same).
    pub fn settings(&self) -> anyhow::Result<gateway::grpc::EventStreamSettings> {
        anyhow::ensure!(
            self.settle > self.append_deadline,
            "--stream-events-settle ({:?}) must exceed --append-deadline ({:?}), with room for a COMMIT and clock skew",
            self.settle,
            self.append_deadline
        );
        Ok(gateway::grpc::EventStreamSettings {
            settle: self.settle,
            poll: self.poll,
            buffer: self.buffer,
            send_timeout: self.send_timeout,
            max_streams: self.max_streams,
        })
    }

    /// The event store's lanes for `pool`, with this append deadline.
    pub fn lanes(&self, pool: &sqlx::AnyPool) -> write_side::LaneSettings {
        write_side::LaneSettings { append_deadline: self.append_deadline, ..write_side::lane_settings_for(pool) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settle_window_must_exceed_the_append_deadline() {
        let args = StreamEventsArgs::default();
        assert!(args.settings().is_ok(), "the defaults agree");
        let tight = StreamEventsArgs { settle: Duration::from_secs(1), ..args };
        assert!(tight.settings().is_err());
    }
}
