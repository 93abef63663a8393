//! `kafka`: produce and fetch throughput over the Kafka protocol with rskafka (an independent
//! client), 1 KiB records by default: one partition, `--inflight` produce requests of `--batch`
//! records at a time, then the whole topic read back from offset 0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// Arguments of the `kafka` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Bootstrap broker, `host:port`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use (created with one partition; default: a fresh name).
    #[arg(long)]
    pub topic: Option<String>,
    /// Records to produce.
    #[arg(long, short = 'n', default_value_t = 200_000)]
    pub records: usize,
    /// Record value size in bytes.
    #[arg(long, short = 's', default_value_t = 1024)]
    pub size: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Produce requests in flight.
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// Print one JSON line with the results.
    #[arg(long)]
    pub json: bool,
}

/// Runs the produce phase, then the fetch phase; prints rates.
pub async fn run(args: KafkaArgs) -> anyhow::Result<()> {
    let client = ClientBuilder::new(vec![args.bootstrap.clone()])
        .build()
        .await
        .context("cannot connect to the Kafka bootstrap broker")?;
    let topic = args.topic.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("perf-{nanos}")
    });
    if let Err(e) = client
        .controller_client()?
        .create_topic(&topic, 1, 1, 5_000)
        .await
    {
        eprintln!("create_topic {topic}: {e} (using it as it is)");
    }
    let partition = Arc::new(
        client
            .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
            .await?,
    );
    let value = vec![b'x'; args.size];
    let batch = args.batch.max(1);
    let batches = args.records.div_ceil(batch);
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..batches {
        let n = batch.min(args.records - i * batch);
        let records: Vec<Record> = (0..n)
            .map(|_| Record {
                key: None,
                value: Some(value.clone()),
                headers: BTreeMap::new(),
                timestamp: chrono::Utc::now(),
            })
            .collect();
        let p = partition.clone();
        inflight.push(async move { p.produce(records, Compression::NoCompression).await });
        if inflight.len() >= args.inflight.max(1)
            && let Some(r) = inflight.next().await
        {
            r?;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    let produce_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut offset = 0i64;
    let mut read = 0usize;
    while read < args.records {
        let (records, _high) = partition.fetch_records(offset, 1..8_000_000, 1_000).await?;
        if let Some(last) = records.last() {
            offset = last.offset + 1;
        }
        read += records.len();
    }
    let fetch_secs = started.elapsed().as_secs_f64();
    let mib = (args.records * args.size) as f64 / (1 << 20) as f64;
    let (p_rate, f_rate) = (
        args.records as f64 / produce_secs,
        args.records as f64 / fetch_secs,
    );
    println!(
        "kafka {topic}: produced {} x {} B in {produce_secs:.2} s ({p_rate:.0} msg/s, {:.1} MiB/s); fetched in {fetch_secs:.2} s ({f_rate:.0} msg/s, {:.1} MiB/s)",
        args.records,
        args.size,
        mib / produce_secs,
        mib / fetch_secs
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "protocol": "kafka",
                "records": args.records,
                "size": args.size,
                "produce_msg_per_s": p_rate,
                "fetch_msg_per_s": f_rate,
            })
        );
    }
    Ok(())
}
