//! IoT Core's message-broker limits, enforced by `local` with IoT's responses. The numbers are
//! from AWS's quota page ("AWS IoT Core endpoints and quotas", message broker and protocol
//! limits: https://docs.aws.amazon.com/general/latest/gr/iot-core.html); the README's table
//! under `local` is this one. A number marked "local" is this gateway's own bound where IoT
//! publishes none.
//!
//! | Limit                                   | Value        | What the client gets                                  |
//! |-----------------------------------------|--------------|-------------------------------------------------------|
//! | Client ID                               | 128 bytes    | CONNACK 0x85 (3.1.1: 2, identifier rejected)          |
//! | Topic name or filter                    | 256 bytes    | PUBACK 0x90 / DISCONNECT 0x90, SUBACK 0x8F (3.1.1: closed, SUBACK 0x80) |
//! | Slashes in a topic or filter            | 7            | as above (`$aws/rules/<rule>/` not counted)           |
//! | Message payload                         | 128 KB       | DISCONNECT 0x95 (3.1.1: closed)                       |
//! | Packet (announced Maximum Packet Size)  | 128 KB + 1 KB| over it: refused as soon as the length is read        |
//! | Subscriptions per SUBSCRIBE             | 8            | every filter of it refused: SUBACK 0x97 (3.1.1: 0x80) |
//! | Subscriptions per connection            | 50           | that filter refused: SUBACK 0x97 (3.1.1: 0x80)        |
//! | Keep-alive                              | 30–1200 s    | clamped; MQTT 5 is told with Server Keep Alive        |
//! | Unacknowledged QoS 1 messages to a client | 100        | no more are sent until it acknowledges                |
//! | Receive Maximum announced               | 100          | (inbound QoS 1 are acknowledged at once)              |
//! | Topic aliases per connection            | 8            | DISCONNECT 0x94 over it                               |
//! | Persistent session expiry               | 1 hour       | IoT's default; a longer request is cut to it          |
//! | Queued QoS 1 messages per offline session | 1,000 (local) | older ones dropped first                            |
//! | Deliveries waiting for one client       | 8 MiB (local)| past it messages are dropped for it                   |
//! | Deliveries waiting, all clients         | 256 MiB (local)| past it messages are dropped                        |
//! | A client with 100 QoS 1 unacknowledged and more waiting | 2 s (local) | acknowledging nothing for that long: DISCONNECT 0x97 |

use std::time::Duration;

pub const CLIENT_ID_BYTES: usize = 128;
pub const TOPIC_BYTES: usize = 256;
pub const TOPIC_SLASHES: usize = 7;
pub const PAYLOAD_BYTES: usize = 128 * 1024;
/// The payload limit plus room for the topic, properties and header.
pub const MAX_PACKET_BYTES: usize = PAYLOAD_BYTES + 1024;
pub const FILTERS_PER_SUBSCRIBE: usize = 8;
pub const SUBSCRIPTIONS_PER_CONNECTION: usize = 50;
pub const KEEP_ALIVE_SECONDS: std::ops::RangeInclusive<u16> = 30..=1200;
pub const INFLIGHT: u16 = 100;
pub const TOPIC_ALIASES: u16 = 8;
pub const SESSION_EXPIRY: Duration = Duration::from_secs(3600);
pub const QUEUED_PER_SESSION: usize = 1000;
/// Memory the deliveries waiting for one session may hold (`Message::queued_bytes`, about 260
/// bytes for a small message: some 30,000 of them).
pub const DELIVERY_QUEUE_BYTES: usize = 8 << 20;
/// Memory the deliveries waiting for all sessions together may hold.
pub const DELIVERIES_BYTES: usize = 256 << 20;
/// How long a client may hold IoT's 100 unacknowledged QoS 1 messages, with more waiting,
/// without acknowledging any: past it the client has stopped reading and is disconnected.
pub const STALL_LIMIT: Duration = Duration::from_secs(2);

/// `Err` says which limit a topic name or filter breaks.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.len() > TOPIC_BYTES {
        return Err(format!(
            "{} bytes; IoT allows at most {TOPIC_BYTES}",
            topic.len()
        ));
    }
    // IoT does not count the Basic Ingest prefix `$aws/rules/<rule>/`.
    let counted = match topic.strip_prefix("$aws/rules/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, t)| t),
        None => topic,
    };
    let slashes = counted.matches('/').count();
    if slashes > TOPIC_SLASHES {
        return Err(format!(
            "{slashes} slashes; IoT allows at most {TOPIC_SLASHES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_limits() {
        assert!(check_topic("a/b/c/d/e/f/g/h").is_ok());
        assert!(check_topic("a/b/c/d/e/f/g/h/i").is_err());
        assert!(check_topic("$aws/rules/r/a/b/c/d/e/f/g/h").is_ok());
        assert!(check_topic(&"a".repeat(256)).is_ok());
        assert!(check_topic(&"a".repeat(257)).is_err());
    }
}
