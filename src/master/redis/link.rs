//! One Redis instance's link task: a pub/sub connection (the rooms this host has members
//! of, subscribed and unsubscribed in batches) and a command connection (publishes and
//! reads, everything queued sent as one pipeline: one round trip, in order). It reports
//! messages, answers and its link state to the loop as events and never blocks the loop.
//!
//! When the pub/sub connection drops, the task reconnects (every [`RETRY`]), subscribes to
//! every room again and reports the link up, and the loop back-fills every room it serves.
//! While it is down, publishes and reads fail at once with `unavailable`.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{Client, Pipeline, RedisResult, Value};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::commands::{Command, PageAnswer, Report};
use super::order::Snapshot;
use super::{presence, script};
use crate::master::events::Event;
use crate::master::history::Epoch;

/// Wait between reconnection attempts.
const RETRY: Duration = Duration::from_millis(250);

/// Longest wait for a connection or a round trip; past it the commands fail `unavailable`
/// (a publish may still have been ordered: the client sees a refusal, never a silent loss).
const TIMEOUT: Duration = Duration::from_secs(1);

/// Most commands sent in one pipeline.
const MAX_BATCH: usize = 1024;

/// One instance's link.
struct Link {
    /// Index into the `--redis` list.
    instance: usize,
    /// How to connect.
    client: Client,
    /// The command connection, made at first use; it reconnects by itself.
    conn: Option<ConnectionManager>,
    /// Channels this host wants (restored after a reconnect).
    channels: HashSet<String>,
    /// The loop.
    events: UnboundedSender<Event>,
    /// The publish and read scripts' hashes (EVALSHA; loaded again after NOSCRIPT).
    publish: redis::Script,
    /// See `publish`.
    read: redis::Script,
    /// See `publish`.
    members: redis::Script,
    /// See `publish`.
    history: redis::Script,
}

/// Starts the link task of instance `instance`, with the broadcast channel when it is the
/// instance broadcasts go through.
pub fn spawn(
    instance: usize,
    client: Client,
    commands: UnboundedReceiver<Command>,
    events: UnboundedSender<Event>,
    broadcasts: bool,
) {
    let mut channels = HashSet::new();
    if broadcasts {
        channels.insert(script::BROADCAST_CHANNEL.to_owned());
    }
    let link = Link {
        instance,
        client,
        conn: None,
        channels,
        events,
        publish: redis::Script::new(script::PUBLISH),
        read: redis::Script::new(script::READ),
        members: redis::Script::new(presence::SYNC),
        history: redis::Script::new(script::HISTORY),
    };
    tokio::task::spawn_local(link.run(commands));
}

impl Link {
    async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        let mut down_reported = false;
        loop {
            let sink_stream = match self.connect_pubsub().await {
                Ok(s) => s,
                Err(why) => {
                    if !down_reported {
                        tracing::warn!(instance = self.instance, %why, "Redis unreachable; publishes are refused until it is back");
                        self.report_link(false, Some(why));
                        down_reported = true;
                    }
                    // Refuse what arrives meanwhile, keep the wanted channels, retry.
                    let sleep = tokio::time::sleep(RETRY);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            cmd = commands.recv() => match cmd {
                                Some(cmd) => {
                                    let batch = drain(cmd, &mut commands);
                                    self.apply(batch, None).await;
                                }
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            };
            let (mut sink, mut stream) = sink_stream;
            // The command connection most likely broke with the pub/sub one (a restart, a
            // network cut): start afresh rather than fail the next publish on it.
            self.conn = None;
            tracing::info!(
                instance = self.instance,
                channels = self.channels.len(),
                "Redis pub/sub link up"
            );
            self.report_link(true, None);
            loop {
                tokio::select! {
                    msg = stream.next() => match msg {
                        Some(msg) => self.on_message(&msg),
                        None => break,
                    },
                    cmd = commands.recv() => match cmd {
                        Some(cmd) => {
                            let batch = drain(cmd, &mut commands);
                            self.apply(batch, Some(&mut sink)).await;
                        }
                        None => return,
                    },
                }
            }
            tracing::warn!(
                instance = self.instance,
                "Redis pub/sub connection lost; reconnecting and back-filling"
            );
            self.report_link(false, Some("the pub/sub connection was lost".into()));
            down_reported = true;
        }
    }

    /// A pub/sub connection subscribed to every wanted channel.
    async fn connect_pubsub(&mut self) -> Result<(PubSubSink, redis::aio::PubSubStream), String> {
        let pubsub = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| format!("no connection within {TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        let (mut sink, stream) = pubsub.split();
        if !self.channels.is_empty() {
            let all: Vec<&String> = self.channels.iter().collect();
            tokio::time::timeout(TIMEOUT, sink.subscribe(all))
                .await
                .map_err(|_| "SUBSCRIBE timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        }
        Ok((sink, stream))
    }

    fn report_link(&self, up: bool, why: Option<String>) {
        let _ = self.events.send(Event::Redis(Report::Link {
            instance: self.instance,
            up,
            why,
        }));
    }

    fn report(&self, r: Report) {
        let _ = self.events.send(Event::Redis(r));
    }

    fn on_message(&self, msg: &redis::Msg) {
        let channel = msg.get_channel_name();
        let Ok(payload) = msg.get_payload::<String>() else {
            return;
        };
        if channel == script::BROADCAST_CHANNEL {
            self.report(Report::Broadcast(payload));
        } else if let Some(room) = script::room_of(channel) {
            let room = room.to_owned();
            if let Some(delivery) = script::parse_delivery(&payload) {
                self.report(Report::Message { room, delivery });
            } else if let Some(notice) = script::parse_notice(&payload) {
                self.report(Report::Notice { room, notice });
            }
        }
    }

    /// Carries out a batch: subscription changes first (so a read that follows a subscribe
    /// sees every message published after it), then one pipeline for the rest, in order.
    async fn apply(&mut self, batch: Vec<Command>, sink: Option<&mut PubSubSink>) {
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        let mut rest = Vec::new();
        for cmd in batch {
            match cmd {
                Command::Subscribe(room) => {
                    let ch = script::channel(&room);
                    unsubscribe.retain(|c| *c != ch);
                    if self.channels.insert(ch.clone()) {
                        subscribe.push(ch);
                    }
                }
                Command::Unsubscribe(room) => {
                    let ch = script::channel(&room);
                    subscribe.retain(|c| *c != ch);
                    if self.channels.remove(&ch) {
                        unsubscribe.push(ch);
                    }
                }
                other => rest.push(other),
            }
        }
        let Some(sink) = sink else {
            return self.fail(rest, "Redis is unreachable".into());
        };
        let changed = async {
            if !subscribe.is_empty() {
                sink.subscribe(&subscribe).await?;
            }
            if !unsubscribe.is_empty() {
                sink.unsubscribe(&unsubscribe).await?;
            }
            RedisResult::Ok(())
        };
        match tokio::time::timeout(TIMEOUT, changed).await {
            Ok(Ok(())) => {}
            // The reads below would miss messages; the reconnect re-subscribes everything.
            Ok(Err(e)) => tracing::warn!(instance = self.instance, error = %e, "SUBSCRIBE failed"),
            Err(_) => tracing::warn!(instance = self.instance, "SUBSCRIBE timed out"),
        }
        if !rest.is_empty() {
            self.round_trip(rest).await;
        }
    }

    /// Sends the commands as one pipeline and reports each answer.
    async fn round_trip(&mut self, cmds: Vec<Command>) {
        let mut result = self.pipeline(&cmds).await;
        if let Err(e) = &result
            && matches!(
                e.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
            )
        {
            // Redis restarted (or flushed its scripts): load them and try once more; a
            // NOSCRIPT pipeline ran none of its scripts.
            result = match self.load_scripts().await {
                Ok(()) => self.pipeline(&cmds).await,
                Err(e) => Err(e),
            };
        }
        match result {
            Ok(values) => {
                for (cmd, value) in cmds.into_iter().zip(values) {
                    self.answer(cmd, value);
                }
            }
            Err(e) => self.fail(cmds, e.to_string()),
        }
    }

    async fn connection(&mut self) -> RedisResult<&mut ConnectionManager> {
        if self.conn.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT))
                .set_number_of_retries(1);
            self.conn = Some(
                self.client
                    .get_connection_manager_with_config(config)
                    .await?,
            );
        }
        Ok(self.conn.as_mut().expect("set just above"))
    }

    async fn load_scripts(&mut self) -> RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(script::PUBLISH);
        pipe.cmd("SCRIPT").arg("LOAD").arg(script::READ);
        pipe.cmd("SCRIPT").arg("LOAD").arg(presence::SYNC);
        pipe.cmd("SCRIPT").arg("LOAD").arg(script::HISTORY);
        let conn = self.connection().await?;
        pipe.query_async::<Vec<String>>(conn).await.map(|_| ())
    }

    async fn pipeline(&mut self, cmds: &[Command]) -> RedisResult<Vec<Value>> {
        let mut pipe = Pipeline::with_capacity(cmds.len());
        for cmd in cmds {
            match cmd {
                Command::Publish {
                    room,
                    data,
                    cap,
                    ttl_s,
                    ..
                } => {
                    pipe.cmd("EVALSHA")
                        .arg(self.publish.get_hash())
                        .arg(3)
                        .arg(script::meta_key(room))
                        .arg(script::log_key(room))
                        .arg(script::channel(room))
                        .arg(Epoch::generate().as_str())
                        .arg(data)
                        .arg(*cap)
                        .arg(*ttl_s);
                }
                Command::Read {
                    room,
                    after,
                    known,
                    ttl_s,
                } => {
                    pipe.cmd("EVALSHA")
                        .arg(self.read.get_hash())
                        .arg(2)
                        .arg(script::meta_key(room))
                        .arg(script::log_key(room))
                        .arg(after.map_or(-1, |a| a as i64))
                        .arg(Epoch::generate().as_str())
                        .arg(*ttl_s)
                        .arg(known.as_deref().unwrap_or(""));
                }
                Command::History {
                    room,
                    request,
                    ttl_s,
                    ..
                } => {
                    let (epoch, seq) = request
                        .since
                        .as_ref()
                        .map_or(("", 0), |(e, s)| (e.as_str(), *s));
                    pipe.cmd("EVALSHA")
                        .arg(self.history.get_hash())
                        .arg(2)
                        .arg(script::meta_key(room))
                        .arg(script::log_key(room))
                        .arg(request.limit)
                        .arg(Epoch::generate().as_str())
                        .arg(*ttl_s)
                        .arg(request.size)
                        .arg(epoch)
                        .arg(seq)
                        .arg(if request.reverse { "1" } else { "0" });
                }
                Command::Broadcast { data, .. } => {
                    pipe.cmd("PUBLISH").arg(script::BROADCAST_CHANNEL).arg(data);
                }
                Command::Notice { room, payload } => {
                    pipe.cmd("PUBLISH").arg(script::channel(room)).arg(payload);
                }
                Command::Beat { host, ttl_s } => {
                    pipe.cmd("SET")
                        .arg(presence::host_key(host))
                        .arg(1)
                        .arg("EX")
                        .arg(*ttl_s);
                }
                Command::Members {
                    room,
                    host,
                    count,
                    ttl_s,
                } => {
                    pipe.cmd("EVALSHA")
                        .arg(self.members.get_hash())
                        .arg(1)
                        .arg(presence::hash_key(room))
                        .arg(host)
                        .arg(*count)
                        .arg(*ttl_s)
                        .arg(presence::HOST_KEY_PREFIX);
                }
                Command::Subscribe(_) | Command::Unsubscribe(_) => {
                    unreachable!("subscriptions are applied before the pipeline")
                }
            }
        }
        let conn = self.connection().await?;
        match tokio::time::timeout(TIMEOUT, pipe.query_async(conn)).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("Redis did not answer within {TIMEOUT:?}"),
            ))),
        }
    }

    fn answer(&self, cmd: Command, value: Value) {
        match cmd {
            Command::Publish { room, ticket, .. } => {
                let result = redis::from_redis_value::<(u64, String)>(value)
                    .map_err(|e| format!("unexpected answer to the publish script: {e}"));
                self.report(Report::Published {
                    ticket,
                    room,
                    result,
                });
            }
            Command::Read { room, .. } => {
                let result = snapshot(value);
                self.report(Report::Read { room, result });
            }
            Command::History {
                room,
                request,
                asker,
                ..
            } => {
                let result = page(value);
                self.report(Report::History {
                    room,
                    request,
                    asker,
                    result,
                });
            }
            Command::Members { room, .. } => {
                if let Ok(total) = redis::from_redis_value::<u64>(value) {
                    self.report(Report::Members { room, total });
                }
            }
            Command::Broadcast { ticket, .. } => self.report(Report::Broadcasted {
                ticket,
                result: Ok(()),
            }),
            _ => {}
        }
    }

    /// Reports every publish and read of `cmds` as refused for `why`.
    fn fail(&self, cmds: Vec<Command>, why: String) {
        for cmd in cmds {
            match cmd {
                Command::Publish { room, ticket, .. } => self.report(Report::Published {
                    ticket,
                    room,
                    result: Err(why.clone()),
                }),
                Command::Read { room, .. } => self.report(Report::Read {
                    room,
                    result: Err(why.clone()),
                }),
                Command::Broadcast { ticket, .. } => self.report(Report::Broadcasted {
                    ticket,
                    result: Err(why.clone()),
                }),
                Command::History {
                    room,
                    request,
                    asker,
                    ..
                } => self.report(Report::History {
                    room,
                    request,
                    asker,
                    result: Err(why.clone()),
                }),
                _ => {}
            }
        }
    }
}

/// The first command and everything already queued behind it, up to [`MAX_BATCH`].
fn drain(first: Command, commands: &mut UnboundedReceiver<Command>) -> Vec<Command> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match commands.try_recv() {
            Ok(c) => batch.push(c),
            Err(_) => break,
        }
    }
    batch
}

/// Stream entries as Redis returns them: id and `[field, value]`.
type Entries = Vec<(String, Vec<String>)>;

/// Stream entries as `(seq, data)`.
fn messages(entries: Entries) -> Vec<(u64, String)> {
    entries
        .into_iter()
        .filter_map(|(id, mut fields)| {
            let seq = script::seq_of_entry(&id)?;
            // Fields come as [name, value]: the data is the second.
            let data = (fields.len() == 2).then(|| fields.swap_remove(1))?;
            Some((seq, data))
        })
        .collect()
}

/// The read script's answer as a [`Snapshot`].
fn snapshot(value: Value) -> Result<Snapshot, String> {
    let (top, epoch, entries) = redis::from_redis_value::<(u64, String, Entries)>(value)
        .map_err(|e| format!("unexpected answer to the read script: {e}"))?;
    Ok(Snapshot {
        top,
        epoch,
        entries: messages(entries),
    })
}

/// The history script's answer as a [`PageAnswer`].
fn page(value: Value) -> Result<PageAnswer, String> {
    let (status, top, epoch, entries) =
        redis::from_redis_value::<(String, u64, String, Entries)>(value)
            .map_err(|e| format!("unexpected answer to the history script: {e}"))?;
    match status.as_str() {
        "ok" => Ok(PageAnswer::Page {
            top,
            epoch,
            messages: messages(entries),
        }),
        "epoch_changed" => Ok(PageAnswer::EpochChanged { top, epoch }),
        "beyond_top" => Ok(PageAnswer::BeyondTop { top }),
        other => Err(format!(
            "unexpected status {other:?} from the history script"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn answer(status: &str, top: i64, entries: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk(status),
            Value::Int(top),
            bulk("e1"),
            Value::Array(entries),
        ])
    }

    #[test]
    fn history_answers_become_pages_or_the_refusal_they_name() {
        let entry = |id: &str, data: &str| {
            Value::Array(vec![bulk(id), Value::Array(vec![bulk("d"), bulk(data)])])
        };
        let got = page(answer(
            "ok",
            7,
            vec![entry("7-1", "\"x\""), entry("6-1", "1")],
        ));
        let want = PageAnswer::Page {
            top: 7,
            epoch: "e1".into(),
            messages: vec![(7, "\"x\"".into()), (6, "1".into())],
        };
        assert_eq!(got, Ok(want));
        assert_eq!(
            page(answer("epoch_changed", 3, vec![])),
            Ok(PageAnswer::EpochChanged {
                top: 3,
                epoch: "e1".into()
            })
        );
        assert_eq!(
            page(answer("beyond_top", 3, vec![])),
            Ok(PageAnswer::BeyondTop { top: 3 })
        );
        assert!(page(answer("what", 3, vec![])).is_err());
        assert!(page(Value::Int(1)).is_err());
    }
}
