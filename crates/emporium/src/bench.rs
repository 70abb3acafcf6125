//! `emporium bench-bus`: the embedded event log's throughput next to the raw SQLite insert rate of
//! the same rows on the same machine, measured in one run so that the ratio is what counts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use async_trait::async_trait;
use clap::Args;
use emporium_events::{Envelope, Event, Money, OrderCreated, OrderLine};
use emporium_platform::{
    bus::{BatchHandler, Delivery, EventBus, InfraError, OutboxLog, Record, SubscribeOptions},
    storage::{Db, EventContext, Migration, query},
};
use uuid::Uuid;

#[derive(Args)]
pub struct BusArgs {
    /// Events per measurement.
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    /// Records per append call (and per raw transaction), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500")]
    batch: Vec<usize>,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Print one JSON line per batch size instead of a table.
    #[arg(long)]
    json: bool,
}

/// A realistic event: an order with two lines, as the saga publishes it.
fn sample_records(n: usize) -> anyhow::Result<Vec<Record>> {
    (0..n)
        .map(|_| {
            let order_id = Uuid::now_v7();
            let line = |price| OrderLine {
                product_id: Uuid::now_v7(),
                quantity: 2,
                unit_price: Money::new(price, "USD"),
            };
            let envelope = Envelope::new(
                "orders",
                &Uuid::now_v7().to_string(),
                None,
                Event::OrderCreated(OrderCreated {
                    order_id,
                    user_id: Uuid::now_v7(),
                    items: vec![line(1999), line(4500)],
                    total: Money::new(12998, "USD"),
                    payment_token: "tok_visa".into(),
                }),
            );
            Ok(Record::from_envelope(&envelope)?)
        })
        .collect()
}

struct Counter(AtomicU64);

#[async_trait]
impl BatchHandler for Counter {
    async fn handle(&self, batch: &[Delivery]) -> Result<(), InfraError> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Inserts the same rows into a plain table through the storage port, `batch` rows per
/// transaction.
async fn raw_sqlite(
    dir: &std::path::Path,
    records: &[Record],
    batch: usize,
) -> anyhow::Result<f64> {
    let db = Db::open_sqlite("raw", &dir.join("raw.db")).await?;
    db.migrate(&[Migration::portable(
        100,
        "rows",
        "CREATE TABLE rows (topic TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
         key TEXT NOT NULL, payload BLOB NOT NULL, headers TEXT NOT NULL, appended_at INTEGER NOT NULL,
         PRIMARY KEY (topic, partition, offset)) WITHOUT ROWID",
    )])
    .await?;
    let started = Instant::now();
    for (chunk_no, chunk) in records.chunks(batch).enumerate() {
        let mut tx = db.begin(EventContext::request("bench", "")).await?;
        for (i, record) in chunk.iter().enumerate() {
            query(
                "INSERT INTO rows (topic, partition, offset, key, payload, headers, appended_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(record.topic.as_str())
            .bind(0i64)
            .bind((chunk_no * batch + i) as i64)
            .bind(record.key.as_str())
            .bind(record.payload.as_slice())
            .bind(serde_json::to_string(&record.headers)?)
            .bind(0i64)
            .execute(tx.conn())
            .await?;
        }
        tx.commit().await?;
    }
    let elapsed = started.elapsed();
    db.close().await;
    Ok(records.len() as f64 / elapsed.as_secs_f64())
}

/// Appends through the bus port with nobody consuming; returns appended/s.
async fn append_only(
    dir: &std::path::Path,
    records: &[Record],
    batch: usize,
    partitions: u32,
) -> anyhow::Result<f64> {
    let log = OutboxLog::open(&dir.join("events.db"), partitions).await?;
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        log.publish(chunk).await?;
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// Appends through the bus port while one group consumes; returns (appended/s, consumed end to end/s).
async fn through_the_log(
    dir: &std::path::Path,
    records: &[Record],
    batch: usize,
    partitions: u32,
) -> anyhow::Result<(f64, f64)> {
    let log = OutboxLog::open(&dir.join("events.db"), partitions).await?;
    let counter = Arc::new(Counter(AtomicU64::new(0)));
    let subscription = log
        .subscribe(
            SubscribeOptions {
                group: "bench".into(),
                topics: vec![records[0].topic.clone()],
                max_batch: 256,
            },
            counter.clone(),
        )
        .await?;
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        log.publish(chunk).await?;
    }
    let appended = started.elapsed();
    let deadline = started + Duration::from_secs(600);
    while counter.0.load(Ordering::Relaxed) < records.len() as u64 {
        anyhow::ensure!(Instant::now() < deadline, "consumer did not catch up");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let consumed = started.elapsed();
    subscription.stop().await;
    let n = records.len() as f64;
    Ok((n / appended.as_secs_f64(), n / consumed.as_secs_f64()))
}

pub async fn bus(args: BusArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    let records = sample_records(args.events)?;
    let payload_bytes = records.iter().map(|r| r.payload.len()).sum::<usize>() / records.len();
    if !args.json {
        println!(
            "{} events of ~{payload_bytes} bytes, {} partitions, one process, SQLite WAL synchronous=NORMAL",
            args.events, args.partitions
        );
        println!(
            "{:>6} {:>13} {:>13} {:>18} {:>13} {:>11} {:>11}",
            "batch",
            "raw sqlite/s",
            "append/s",
            "append+consume/s",
            "end to end/s",
            "append/raw",
            "e2e/raw"
        );
    }
    for batch in args.batch.iter().copied().filter(|b| *b > 0) {
        let raw_dir = tempfile::tempdir().context("temp dir")?;
        let raw = raw_sqlite(raw_dir.path(), &records, batch).await?;
        let only_dir = tempfile::tempdir().context("temp dir")?;
        let only = append_only(only_dir.path(), &records, batch, args.partitions).await?;
        let bus_dir = tempfile::tempdir().context("temp dir")?;
        let (append, end_to_end) =
            through_the_log(bus_dir.path(), &records, batch, args.partitions).await?;
        if args.json {
            println!(
                "{}",
                serde_json::json!({"batch": batch, "events": args.events, "payloadBytes": payload_bytes,
                    "rawSqlitePerSec": raw.round(), "appendOnlyPerSec": only.round(),
                    "appendWhileConsumingPerSec": append.round(), "endToEndPerSec": end_to_end.round(),
                    "appendToRaw": only / raw, "endToEndToRaw": end_to_end / raw})
            );
        } else {
            println!(
                "{batch:>6} {raw:>13.0} {only:>13.0} {append:>18.0} {end_to_end:>13.0} {:>11.2} {:>11.2}",
                only / raw,
                end_to_end / raw
            );
        }
    }
    Ok(())
}
