//! Rooms across hosts through Redis (issue 13), against the real binary and a real
//! `redis-server` started here (skipped with a message when it is not installed): fleets
//! sharing one Redis keep one order per room, recover across hosts with `since`, refuse
//! publishes while Redis is down, see new epochs after Redis lost its data, back-fill
//! after a pub/sub connection is killed, only receive rooms they have members of, and
//! spread rooms over two instances, keep one order between two hosts in network
//! namespaces (skipped without the privilege to create them), and serve `history` pages
//! (client requests and the server API's method) from the Redis stream on every host.

mod common;
#[path = "redis_support/netns.rs"]
mod netns;
#[path = "redis_support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use common::{Fleet, T, TempDir, Ws, api_request, client, recv, recv_type, send};
use serde_json::{Value, json};

/// A fleet of 2 workers using the Redis instances `urls`.
fn fleet(urls: &[String]) -> Fleet {
    fleet_with(urls, &[])
}

/// A fleet of 2 workers using the Redis instances `urls`, plus `extra` arguments.
fn fleet_with(urls: &[String], extra: &[&str]) -> Fleet {
    let mut args = vec!["--history-size", "1000"];
    args.extend_from_slice(extra);
    for u in urls {
        args.extend(["--redis", u.as_str()]);
    }
    let f = Fleet::start(&args);
    f.wait_stats("the Redis link up", T, |s| {
        s["master"]["redis"]["instances"]
            .as_array()
            .is_some_and(|i| i.iter().all(|i| i["up"] == true))
    });
    f
}

/// Joins `room` (with `since` when given) and returns the `joined` frame.
async fn join(ws: &mut Ws, room: &str, since: Option<(&str, u64)>) -> Value {
    let mut req = json!({"type":"join","room":room});
    if let Some((epoch, seq)) = since {
        req["since"] = json!({"epoch":epoch,"seq":seq});
    }
    send(ws, req).await;
    recv_type(ws, "joined").await.0
}

/// Publishes `data` with an ack id and returns the answer (`ack` or `error`).
async fn publish(ws: &mut Ws, room: &str, data: Value) -> Value {
    let id = data.clone();
    send(
        ws,
        json!({"type":"publish","room":room,"data":data,"id":id}),
    )
    .await;
    loop {
        let v = recv(ws).await;
        if (v["type"] == "ack" || v["type"] == "error") && v["id"] == id {
            return v;
        }
    }
}

/// The next `n` messages of `room` as `(seq, data)`.
async fn messages(ws: &mut Ws, room: &str, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let v = recv(ws).await;
        if v["type"] == "message" && v["room"] == room {
            out.push((v["seq"].as_u64().unwrap(), v["data"].clone()));
        }
    }
    out
}

fn redis_stat(f: &Fleet, name: &str) -> u64 {
    f.stats()["master"]["redis"][name].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_fleets_share_one_order_and_only_members_hosts_receive() {
    let Some(redis) = server::start() else { return };
    let urls = [redis.url()];
    let fleets: Vec<Fleet> = (0..3).map(|_| fleet(&urls)).collect();
    let mut members = Vec::new();
    for f in &fleets {
        for _ in 0..2 {
            let (mut ws, _, _) = client(f).await;
            join(&mut ws, "r", None).await;
            members.push(ws);
        }
    }
    const N: u64 = 40;
    let mut publishers = Vec::new();
    for (i, f) in fleets.iter().enumerate() {
        let (mut ws, _, _) = client(f).await;
        publishers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..N {
                let ack = publish(&mut ws, "r", json!(format!("{i}-{k}"))).await;
                assert_eq!(ack["type"], "ack", "{ack}");
                acked.push(ack["seq"].as_u64().unwrap());
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for p in publishers {
        acked.extend(tokio::time::timeout(T, p).await.unwrap().unwrap());
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=3 * N).collect::<Vec<_>>(),
        "acks carry one order"
    );
    let mut first: Option<Vec<(u64, Value)>> = None;
    for ws in &mut members {
        let got = messages(ws, "r", (3 * N) as usize).await;
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=3 * N).collect::<Vec<_>>(),
            "no gap, no duplicate"
        );
        match &first {
            None => first = Some(got),
            Some(f) => assert_eq!(f, &got, "every member sees the same order"),
        }
    }

    // A broadcast from one host reaches clients on every host.
    let (mut caster, _, _) = client(&fleets[2]).await;
    send(
        &mut caster,
        json!({"type":"broadcast","data":"all","id":"b"}),
    )
    .await;
    assert_eq!(recv_type(&mut caster, "ack").await.0["id"], "b");
    for ws in &mut members {
        loop {
            let v = recv(ws).await;
            if v["type"] == "message" && v["data"] == "all" {
                assert!(v.get("room").is_none(), "{v}");
                break;
            }
        }
    }

    // Interest: a room with members only on fleet 0 reaches no other host.
    let (mut only, _, _) = client(&fleets[0]).await;
    join(&mut only, "only-0", None).await;
    let before: Vec<u64> = fleets.iter().map(|f| redis_stat(f, "received")).collect();
    let (mut p, _, _) = client(&fleets[1]).await;
    for k in 0..10 {
        assert_eq!(publish(&mut p, "only-0", json!(k)).await["type"], "ack");
    }
    assert_eq!(messages(&mut only, "only-0", 10).await.len(), 10);
    let after: Vec<u64> = fleets.iter().map(|f| redis_stat(f, "received")).collect();
    assert_eq!(
        after[0] - before[0],
        10,
        "the member's host received each once"
    );
    assert_eq!(
        after[1], before[1],
        "the publisher's host has no member: nothing"
    );
    assert_eq!(
        after[2], before[2],
        "a host with no member receives nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_fleet_recovers_on_another_from_redis() {
    let Some(redis) = server::start() else { return };
    let urls = [redis.url()];
    let mut a = fleet(&urls);
    let b = fleet(&urls);
    let (mut member, _, _) = client(&a).await;
    let joined = join(&mut member, "rec", None).await;
    let epoch = joined["epoch"]
        .as_str()
        .expect("joined carries the epoch")
        .to_owned();
    let (mut p, _, _) = client(&b).await;
    for k in 1..=5 {
        assert_eq!(publish(&mut p, "rec", json!(k)).await["seq"], k);
    }
    let seen = messages(&mut member, "rec", 5).await;
    let last = seen.last().unwrap().0;
    a.kill_tree();
    drop(member);
    for k in 6..=9 {
        assert_eq!(publish(&mut p, "rec", json!(k)).await["seq"], k);
    }
    let (mut back, _, _) = client(&b).await;
    send(
        &mut back,
        json!({"type":"join","room":"rec","since":{"epoch":epoch,"seq":last}}),
    )
    .await;
    let (joined, _) = recv_type(&mut back, "joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let replay = messages(&mut back, "rec", 4).await;
    assert_eq!(
        replay,
        (6..=9).map(|k| (k, json!(k))).collect::<Vec<_>>(),
        "exactly what it missed"
    );
    assert_eq!(publish(&mut p, "rec", json!(10)).await["seq"], 10);
    assert_eq!(messages(&mut back, "rec", 1).await, [(10, json!(10))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_is_backfilled_without_loss_or_duplicate() {
    let Some(redis) = server::start() else { return };
    let urls = [redis.url()];
    let a = fleet(&urls);
    let b = fleet(&urls);
    let (mut member, _, _) = client(&b).await;
    join(&mut member, "kill", None).await;
    let (mut p, _, _) = client(&a).await;
    const N: u64 = 300;
    let mut acked = Vec::new();
    for k in 1..=N {
        if k == N / 2 {
            let killed = redis.int(&["CLIENT", "KILL", "TYPE", "pubsub"]);
            assert!(killed >= 2, "both hosts' pub/sub connections: {killed}");
        }
        let ack = publish(&mut p, "kill", json!(k)).await;
        // While a host's link is down its publishes are refused, never dropped.
        match ack["type"].as_str() {
            Some("ack") => acked.push(ack["seq"].as_u64().unwrap()),
            _ => assert_eq!(ack["code"], "unavailable", "{ack}"),
        }
    }
    let n = acked.len() as u64;
    assert_eq!(acked, (1..=n).collect::<Vec<_>>());
    let got = messages(&mut member, "kill", n as usize).await;
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, acked, "every acknowledged message once, in order");
    b.wait_stats("a resync", T, |s| {
        s["master"]["redis"]["resyncs"].as_u64() >= Some(2)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_refused_while_redis_is_down_and_a_restart_changes_epochs() {
    let Some(mut redis) = server::start() else {
        return;
    };
    let urls = [redis.url()];
    let a = fleet(&urls);
    let b = fleet(&urls);
    let (mut member, _, _) = client(&b).await;
    let joined = join(&mut member, "down", None).await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let (mut p, _, _) = client(&a).await;
    assert_eq!(publish(&mut p, "down", json!(1)).await["seq"], 1);
    assert_eq!(messages(&mut member, "down", 1).await[0].0, 1);

    // Paused (CLIENT PAUSE: like DEBUG SLEEP, Redis answers nothing meanwhile, and it is
    // in effect once answered): publishes past the link's 1 s bound are refused; every
    // acknowledged one is delivered.
    assert_eq!(redis.cmd(&["CLIENT", "PAUSE", "2500", "ALL"]), "+OK");
    let mut acked = vec![1];
    let mut refused = 0;
    for k in 2..=6 {
        let v = publish(&mut p, "down", json!(k)).await;
        match v["type"].as_str() {
            Some("ack") => acked.push(v["seq"].as_u64().unwrap()),
            _ => {
                assert_eq!(v["code"], "unavailable", "{v}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a paused Redis refuses publishes");
    let top = *acked.last().unwrap();
    if top > 1 {
        let seen = messages(&mut member, "down", (top - 1) as usize).await;
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (2..=top).collect::<Vec<_>>(),
            "nothing acknowledged is lost"
        );
    }

    // Gone: refused with `unavailable`, shown in stats and /ready.
    redis.kill();
    let deadline = Instant::now() + T;
    loop {
        let v = publish(&mut p, "down", json!("x")).await;
        if v["type"] == "error" {
            assert_eq!(v["code"], "unavailable", "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishes still accepted with Redis down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = a.wait_stats("the link down", T, |s| {
        s["master"]["redis"]["instances"][0]["up"] == false
    });
    assert!(s["master"]["redis"]["refused"].as_u64() > Some(0));
    let out = a.cli(&["stats"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("down"));
    let (status, body) = a.admin_get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Redis instance 0"), "{body}");
    let (_, metrics) = a.admin_get("/metrics");
    assert!(
        metrics.contains("wsfleet_redis_up{instance=\"0\"} 0"),
        "{metrics}"
    );

    // Back, empty: a new epoch, old positions are not recovered.
    redis.restart();
    a.wait_stats("the link up", T, |s| {
        s["master"]["redis"]["instances"][0]["up"] == true
    });
    b.wait_stats("the link up", T, |s| {
        s["master"]["redis"]["instances"][0]["up"] == true
    });
    let ack = publish(&mut p, "down", json!("new")).await;
    assert_eq!(ack["seq"], 1, "{ack}");
    assert_ne!(ack["epoch"], epoch.as_str());
    let (mut late, _, _) = client(&b).await;
    let j = join(&mut late, "down", Some((&epoch, 1))).await;
    assert_eq!(j["recovered"], false, "{j}");
    assert_eq!(j["epoch"], ack["epoch"]);
    // The member that stayed gets the new life in order.
    let got = messages(&mut member, "down", 1).await;
    assert_eq!(got, [(1, json!("new"))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_rooms_and_keep_each_rooms_order() {
    let Some(r1) = server::start() else { return };
    let Some(r2) = server::start() else { return };
    let urls = [r1.url(), r2.url()];
    let a = fleet(&urls);
    let b = fleet(&urls);
    const ROOMS: usize = 12;
    const N: u64 = 10;
    let mut members = Vec::new();
    for i in 0..ROOMS {
        let (mut ws, _, _) = client(&b).await;
        join(&mut ws, &format!("room-{i}"), None).await;
        members.push(ws);
    }
    let (mut p, _, _) = client(&a).await;
    for k in 1..=N {
        for i in 0..ROOMS {
            assert_eq!(
                publish(&mut p, &format!("room-{i}"), json!(k)).await["seq"],
                k
            );
        }
    }
    for (i, ws) in members.iter_mut().enumerate() {
        let got = messages(ws, &format!("room-{i}"), N as usize).await;
        assert_eq!(got, (1..=N).map(|k| (k, json!(k))).collect::<Vec<_>>());
    }
    let on = |r: &server::RedisServer| {
        (0..ROOMS)
            .filter(|i| r.int(&["EXISTS", &format!("wsf:{{room-{i}}}:m")]) == 1)
            .count()
    };
    let (n1, n2) = (on(&r1), on(&r2));
    assert_eq!(n1 + n2, ROOMS, "each room on exactly one instance");
    assert!(n1 > 0 && n2 > 0, "rooms land on both: {n1} + {n2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_hosts_and_a_dead_hosts_members_are_forgotten() {
    let Some(redis) = server::start() else { return };
    let urls = [redis.url()];
    let mut a = fleet(&urls);
    let b = fleet(&urls);
    let (mut x, _, _) = client(&b).await;
    join(&mut x, "pres", None).await;
    let (mut y, _, y_id) = client(&a).await;
    join(&mut y, "pres", None).await;
    let (notice, _) = recv_type(&mut x, "presence").await;
    assert_eq!(notice["id"], y_id.as_str(), "{notice}");
    let members = |s: &Value| s["master"]["redis"]["members"].as_u64();
    b.wait_stats("both hosts' members counted", T, |s| members(s) == Some(2));
    a.kill_tree();
    // The heartbeat expires after 9 s and the next beat (every 3 s) forgets the host.
    b.wait_stats("the dead host forgotten", Duration::from_secs(20), |s| {
        members(s) == Some(1)
    });
    let host_b = b.stats()["master"]["redis"]["host"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(redis.cmd(&["HLEN", "wsf:{pres}:p"]), ":1");
    assert_eq!(redis.cmd(&["HEXISTS", "wsf:{pres}:p", &host_b]), ":1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_in_network_namespaces_share_one_order() {
    let Some(ns0) = netns::NetNs::create(0) else {
        return;
    };
    let Some(ns1) = netns::NetNs::create(1) else {
        return;
    };
    let Some(redis) = server::start_on("0.0.0.0") else {
        return;
    };
    let start = |ns: &netns::NetNs| {
        let dir = common::TempDir::new();
        let bin = ns.wrapper(&dir.0, common::BIN);
        let url = format!("redis://{}:{}", ns.gateway, redis.port);
        let listen = format!("{}:0", ns.addr);
        let args = [
            "--listen",
            &listen,
            "--redis",
            &url,
            "--history-size",
            "1000",
        ];
        let f =
            Fleet::start_in(bin.to_str().unwrap(), dir, &args).unwrap_or_else(|e| panic!("{e}"));
        f.wait_stats("the Redis link up", T, |s| {
            s["master"]["redis"]["instances"][0]["up"] == true
        });
        f
    };
    let hosts = [start(&ns0), start(&ns1)];
    assert!(hosts[0].addr.starts_with(&ns0.addr) && hosts[1].addr.starts_with(&ns1.addr));
    let mut members = Vec::new();
    for f in &hosts {
        let (mut ws, _, _) = client(f).await;
        join(&mut ws, "ns", None).await;
        members.push(ws);
    }
    const N: u64 = 30;
    let mut publishers = Vec::new();
    for (i, f) in hosts.iter().enumerate() {
        let (mut ws, _, _) = client(f).await;
        publishers.push(tokio::spawn(async move {
            for k in 0..N {
                let ack = publish(&mut ws, "ns", json!(format!("{i}-{k}"))).await;
                assert_eq!(ack["type"], "ack", "{ack}");
            }
        }));
    }
    for p in publishers {
        tokio::time::timeout(T, p).await.unwrap().unwrap();
    }
    let a = messages(&mut members[0], "ns", (2 * N) as usize).await;
    let b = messages(&mut members[1], "ns", (2 * N) as usize).await;
    let seqs: Vec<u64> = a.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=2 * N).collect::<Vec<_>>());
    assert_eq!(a, b, "both hosts' members see one order");
}

/// A client's `history` request on `ws`; the answer (`history` or `error`) with id `id`.
async fn history(ws: &mut Ws, room: &str, id: &str, fields: Value) -> Value {
    let mut req = json!({"type":"history","room":room,"id":id});
    for (k, v) in fields.as_object().unwrap() {
        req[k] = v.clone();
    }
    send(ws, req).await;
    loop {
        let v = recv(ws).await;
        if (v["type"] == "history" || v["type"] == "error") && v["id"] == id {
            return v;
        }
    }
}

/// The `seq`s of a `history` page.
fn page_seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_read_from_redis_on_every_host_and_a_lost_redis_changes_its_epoch() {
    let Some(mut redis) = server::start() else {
        return;
    };
    const KEY: &str = "redis-history-key-0123456789";
    let keys = TempDir::new();
    let file = keys.0.join("api.key");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let urls = [redis.url()];
    let a = fleet(&urls);
    let api = [
        "--api",
        "127.0.0.1:0",
        "--api-key-file",
        file.to_str().unwrap(),
    ];
    let b = fleet_with(&urls, &api);

    // Published on host A (nobody is a member anywhere), read on host B.
    let (mut p, _, _) = client(&a).await;
    for k in 1..=5 {
        assert_eq!(publish(&mut p, "h", json!(k)).await["seq"], k);
    }
    let (mut q, _, _) = client(&b).await;
    let first = history(&mut q, "h", "1", json!({"limit": 2})).await;
    assert_eq!(
        (first["type"].as_str(), first["seq"].as_u64()),
        (Some("history"), Some(5)),
        "{first}"
    );
    assert_eq!(page_seqs(&first), [1, 2], "the oldest first: {first}");
    assert_eq!(first["messages"][1]["data"], 2);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let since = |seq: u64| json!({"epoch": epoch, "seq": seq});
    let next = history(&mut q, "h", "2", json!({"limit": 2, "since": since(2)})).await;
    assert_eq!(page_seqs(&next), [3, 4], "forward after since: {next}");
    let newest = history(&mut q, "h", "3", json!({"limit": 2, "reverse": true})).await;
    assert_eq!(page_seqs(&newest), [5, 4], "the newest first: {newest}");
    let back = history(
        &mut q,
        "h",
        "4",
        json!({"limit": 9, "reverse": true, "since": since(4)}),
    )
    .await;
    assert_eq!(page_seqs(&back), [3, 2, 1], "back from since: {back}");
    let none = history(&mut q, "h", "5", json!({"limit": 0})).await;
    assert_eq!(
        (page_seqs(&none), none["seq"].as_u64()),
        (vec![], Some(5)),
        "{none}"
    );
    let beyond = history(&mut q, "h", "6", json!({"limit": 2, "since": since(9)})).await;
    assert_eq!(beyond["code"], "invalid_field", "{beyond}");

    // The server API's method on host B reads the same stream.
    let body = json!({"room": "h", "limit": 3, "reverse": true}).to_string();
    let (status, page) = api_request(&b, "POST", "/api/history", Some(KEY), &body).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page_seqs(&page), page["epoch"].as_str()),
        (vec![5, 4, 3], Some(epoch.as_str()))
    );

    // Redis restarted empty: the old position is refused, never misread.
    redis.restart();
    for f in [&a, &b] {
        f.wait_stats("the link up", T, |s| {
            s["master"]["redis"]["instances"][0]["up"] == true
        });
    }
    let stale = history(&mut q, "h", "7", json!({"limit": 2, "since": since(5)})).await;
    assert_eq!(stale["code"], "epoch_changed", "{stale}");
    let body = json!({"room": "h", "since": since(5)}).to_string();
    let (status, answer) = api_request(&b, "POST", "/api/history", Some(KEY), &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("epoch_changed")),
        "{answer}"
    );
    let fresh = history(&mut q, "h", "8", json!({"limit": 2})).await;
    assert_eq!(
        (page_seqs(&fresh), fresh["seq"].as_u64()),
        (vec![], Some(0)),
        "{fresh}"
    );
    assert_ne!(fresh["epoch"], epoch.as_str());
}
