//! Issue 10, point 2: does a reservation cost the same on a product's
//! 100 000th event as on its first?
//!
//! For each backend (a PostgreSQL database created and dropped here, and a
//! SQLite file in a temporary directory) it seeds, per round, a "hot"
//! product with `--events` events (multi-row INSERTs in the store's row
//! format, one transaction) and a "fresh" one (AddProduct through the store).
//! Then, per round and product, on a new [`SqlEventStore`] (empty cache):
//! the first ReserveStock (cold: the stream is read and folded once), the
//! next one (warm), `--sequential` reservations one at a time, and
//! `--concurrent` reservations from `--tasks` tasks (group commit). Hot and
//! fresh alternate which goes first; each round ends with the database's own
//! one-row INSERT (the `scripts/bench` pgbench table) at the same counts.
//!
//! ```sh
//! cargo run --release -p conveyor-write-side --example hot_stream -- \
//!   [--backend both|postgres|sqlite] [--events 100000] [--sequential 2000] \
//!   [--concurrent 20000] [--tasks 64] [--rounds 3] [--pool 8] [--settle 11]
//! ```
//!
//! PostgreSQL: `DATABASE_URL` names the server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Commits come from
//! `pg_stat_database.xact_commit`, which backends flush up to
//! `PGSTAT_IDLE_INTERVAL` (10 s) late, hence `--settle` seconds of quiet
//! before each reading. Statements and their server execution time per
//! sequential command come from `pg_stat_statements` (preloaded on the
//! server; the example creates its view in the bench database). Both
//! backends: `batches` counts the distinct `outbox.created_at` of the run's
//! events, one per transaction that appended them; `cpu µs/cmd` is this
//! process's CPU time (all threads, SQLite's included) per command.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use schema::envelope::{Message, stream_id};
use schema::product::{self, AddProduct, ProductCommand, ProductEvent, ReserveStock, StockReserved};
use schema::product::{StockCommitted, StockReleased};
use schema::sql::to_micros;
use schema::{CommandEnvelope, Metadata, OutcomeStatus};
use sqlx::{AnyPool, AssertSqlSafe};
use uuid::Uuid;
use write_side::SqlEventStore;
use write_side::product::Product;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Options {
    backends: Vec<&'static str>,
    events: u64,
    sequential: usize,
    concurrent: usize,
    tasks: usize,
    rounds: usize,
    pool: u32,
    settle: Duration,
}

fn options() -> Result<Options, Error> {
    let mut options = Options {
        backends: vec!["postgres", "sqlite"],
        events: 100_000,
        sequential: 2_000,
        concurrent: 20_000,
        tasks: 64,
        rounds: 3,
        pool: 8,
        settle: Duration::from_secs(11),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--backend" => {
                options.backends = match value.as_str() {
                    "both" => vec!["postgres", "sqlite"],
                    "postgres" => vec!["postgres"],
                    "sqlite" => vec!["sqlite"],
                    other => return Err(format!("unknown backend {other}").into()),
                }
            }
            "--events" => options.events = value.parse::<u64>()?.max(1),
            "--sequential" => options.sequential = value.parse::<usize>()?.max(1),
            "--concurrent" => options.concurrent = value.parse()?,
            "--tasks" => options.tasks = value.parse::<usize>()?.max(1),
            "--rounds" => options.rounds = value.parse::<usize>()?.max(1),
            "--pool" => options.pool = value.parse::<u32>()?.clamp(1, 8),
            "--settle" => options.settle = Duration::from_secs_f64(value.parse()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let options = options()?;
    println!("{options:?}");
    for backend in options.backends.clone() {
        let rows = match backend {
            "postgres" => on_postgres(&options).await?,
            _ => on_sqlite(&options).await?,
        };
        print_table(backend, &options, &rows);
    }
    Ok(())
}

/// A database to measure, and (PostgreSQL) where to read its counters.
struct Bench {
    pool: AnyPool,
    stats: Option<PgStats>,
    options: Options,
}

async fn on_postgres(options: &Options) -> Result<Vec<Row>, Error> {
    let admin_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = schema::sql::connect(&admin_url, 1).await.map_err(|e| format!("PostgreSQL at {admin_url}: {e}"))?;
    let database = format!("conveyor_hot_{}", Uuid::now_v7().simple());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&admin).await?;
    // The same server and parameters (`?sslmode=…`), another database.
    let (base, parameters) = admin_url.split_once('?').map_or((admin_url.as_str(), ""), |(b, p)| (b, p));
    let server = &base[..base.rfind('/').unwrap_or(base.len())];
    let url = if parameters.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{parameters}")
    };
    let result = async {
        let pool = schema::sql::connect(&url, options.pool).await?;
        // The view lives in the database that creates the extension; the
        // library itself is preloaded server-wide.
        let reader = schema::sql::connect(&url, 1).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&reader).await?;
        let stats = PgStats { admin: admin.clone(), reader, database: database.clone() };
        measure(Bench { pool: pool.clone(), stats: Some(stats), options: options.clone() }).await
    }
    .await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))).execute(&admin).await?;
    result
}

async fn on_sqlite(options: &Options) -> Result<Vec<Row>, Error> {
    let dir = std::env::temp_dir().join(format!("conveyor-hot-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("events.db").display());
    let result = async {
        let pool = schema::sql::connect(&url, options.pool).await?;
        measure(Bench { pool: pool.clone(), stats: None, options: options.clone() }).await
    }
    .await;
    std::fs::remove_dir_all(&dir)?;
    result
}

/// One measured run of one product (or of the baseline INSERT).
#[derive(Debug, Default, Clone)]
struct Run {
    first_cold: Option<Duration>,
    first_warm: Option<Duration>,
    sequential: Vec<Duration>,
    /// This process's CPU time (all threads) over the sequential and the
    /// concurrent commands.
    cpu_sequential: Option<Duration>,
    cpu_concurrent: Option<Duration>,
    /// Statements, and their server execution ms, per sequential command.
    statements_per_command: Option<(f64, f64)>,
    concurrent: Duration,
    commits: Option<i64>,
    rollbacks: Option<i64>,
    batches: Option<i64>,
    rejected: usize,
}

/// A row of the table: what a run measured, per round.
struct Row {
    label: &'static str,
    runs: Vec<Run>,
}

async fn measure(bench: Bench) -> Result<Vec<Row>, Error> {
    let setup = SqlEventStore::new(bench.pool.clone());
    setup.migrate().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS pgbench_one_row (id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
        .execute(&bench.pool)
        .await?;
    let mut products = Vec::new();
    for round in 0..bench.options.rounds {
        let hot = format!("hot-{round}-{}", Uuid::now_v7().simple());
        let started = Instant::now();
        seed_hot(&bench.pool, &hot, bench.options.events).await?;
        let seeded = started.elapsed();
        let started = Instant::now();
        let (state, version) = setup.load::<Product>(&hot).await?;
        println!(
            "round {round}: seeded {version} events in {:.2} s (multi-row INSERT); SqlEventStore::load read and \
             folded them in {:.0} ms; {} units available",
            seeded.as_secs_f64(),
            ms(started.elapsed()),
            state.available()
        );
        let fresh = format!("fresh-{round}-{}", Uuid::now_v7().simple());
        let add = ProductCommand::AddProduct(AddProduct {
            name: "New console".into(),
            price_cents: 49_900,
            initial_stock: 10_000_000,
        });
        let outcome = setup.execute::<Product>(&envelope(&fresh, &add), add).await?.outcome;
        if outcome.status != OutcomeStatus::Accepted {
            return Err(format!("adding the fresh product: {:?}", outcome.rejection).into());
        }
        products.push((hot, fresh));
    }
    drop(setup);
    if bench.stats.is_some() {
        sqlx::query("VACUUM ANALYZE events").execute(&bench.pool).await?;
        sqlx::query("VACUUM ANALYZE pgbench_one_row").execute(&bench.pool).await?;
    }

    let mut hot_runs = Vec::new();
    let mut fresh_runs = Vec::new();
    let mut insert_runs = Vec::new();
    for (round, (hot, fresh)) in products.iter().enumerate() {
        for which in if round % 2 == 0 { ["hot", "fresh"] } else { ["fresh", "hot"] } {
            let (sku, runs) = if which == "hot" { (hot, &mut hot_runs) } else { (fresh, &mut fresh_runs) };
            let run = run_product(&bench, sku).await?;
            println!("round {round} {which:>5}: {} | load average {}", summary(&run, &bench.options), load_average());
            runs.push(run);
        }
        let run = run_inserts(&bench).await?;
        println!("round {round} INSERT: {}", summary(&run, &bench.options));
        insert_runs.push(run);
    }
    Ok(vec![
        Row { label: "hot", runs: hot_runs },
        Row { label: "fresh", runs: fresh_runs },
        Row { label: "one-row INSERT", runs: insert_runs },
    ])
}

fn envelope(sku: &str, command: &ProductCommand) -> CommandEnvelope {
    let id = Uuid::now_v7();
    CommandEnvelope::new(id, product::AGGREGATE, sku, Metadata::origin(id, "hot-stream-bench"), command)
}

/// Reserves one unit for a new order; whether it was accepted.
async fn reserve(store: &SqlEventStore, sku: &str) -> Result<bool, Error> {
    let command = ProductCommand::ReserveStock(ReserveStock {
        credit_limit_cents: None,
        order_id: Uuid::now_v7().to_string(),
        quantity: 1,
        expected_unit_price_cents: None,
    });
    let decision = store.execute::<Product>(&envelope(sku, &command), command).await?;
    Ok(decision.outcome.status == OutcomeStatus::Accepted)
}

async fn run_product(bench: &Bench, sku: &str) -> Result<Run, Error> {
    let store = SqlEventStore::new(bench.pool.clone());
    let mut run = Run::default();
    for slot in [&mut run.first_cold, &mut run.first_warm] {
        let started = Instant::now();
        run.rejected += usize::from(!reserve(&store, sku).await?);
        *slot = Some(started.elapsed());
    }
    let statements = bench.statements().await?;
    let cpu = process_cpu();
    for _ in 0..bench.options.sequential {
        let started = Instant::now();
        run.rejected += usize::from(!reserve(&store, sku).await?);
        run.sequential.push(started.elapsed());
    }
    run.cpu_sequential = since(cpu);
    run.statements_per_command = per_command(statements, bench.statements().await?, bench.options.sequential);

    let stream = stream_id(product::AGGREGATE, sku);
    let version: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM events WHERE stream_id = $1")
        .bind(stream.clone())
        .fetch_one(&bench.pool)
        .await?;
    let counters = bench.commits().await?;
    let (cpu, started) = (process_cpu(), Instant::now());
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares(bench.options.concurrent, bench.options.tasks) {
        let (store, sku) = (store.clone(), sku.to_string());
        tasks.spawn(async move {
            let mut rejected = 0;
            for _ in 0..share {
                rejected += usize::from(!reserve(&store, &sku).await?);
            }
            Ok::<_, Error>(rejected)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        run.rejected += joined??;
    }
    (run.concurrent, run.cpu_concurrent) = (started.elapsed(), since(cpu));
    (run.commits, run.rollbacks) = delta(counters, bench.commits().await?);
    run.batches = Some(
        sqlx::query_scalar("SELECT COUNT(DISTINCT created_at) FROM outbox WHERE stream_id = $1 AND version > $2")
            .bind(stream)
            .bind(version)
            .fetch_one(&bench.pool)
            .await?,
    );
    Ok(run)
}

/// The database's own rate: `INSERT INTO pgbench_one_row VALUES ($1, $2)`,
/// autocommitted, at the same counts and task concurrency.
async fn run_inserts(bench: &Bench) -> Result<Run, Error> {
    async fn insert(pool: &AnyPool) -> Result<(), Error> {
        sqlx::query("INSERT INTO pgbench_one_row VALUES ($1, $2)")
            .bind(Uuid::now_v7().to_string())
            .bind("order")
            .execute(pool)
            .await?;
        Ok(())
    }
    let mut run = Run::default();
    let statements = bench.statements().await?;
    for _ in 0..bench.options.sequential {
        let started = Instant::now();
        insert(&bench.pool).await?;
        run.sequential.push(started.elapsed());
    }
    run.statements_per_command = per_command(statements, bench.statements().await?, bench.options.sequential);
    let counters = bench.commits().await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares(bench.options.concurrent, bench.options.tasks) {
        let pool = bench.pool.clone();
        tasks.spawn(async move {
            for _ in 0..share {
                insert(&pool).await?;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    run.concurrent = started.elapsed();
    (run.commits, run.rollbacks) = delta(counters, bench.commits().await?);
    Ok(run)
}

/// `total` split over `tasks` as evenly as possible.
fn shares(total: usize, tasks: usize) -> Vec<usize> {
    (0..tasks).map(|task| total / tasks + usize::from(task < total % tasks)).collect()
}

fn delta(before: Option<(i64, i64)>, after: Option<(i64, i64)>) -> (Option<i64>, Option<i64>) {
    match (before, after) {
        (Some(before), Some(after)) => (Some(after.0 - before.0), Some(after.1 - before.1)),
        _ => (None, None),
    }
}

/// PostgreSQL's counters for the bench database.
struct PgStats {
    /// Reads `pg_stat_database` from the admin database, so that reading
    /// adds no transaction to the bench database's count.
    admin: AnyPool,
    /// Reads `pg_stat_statements`, whose view is in the bench database.
    reader: AnyPool,
    database: String,
}

impl Bench {
    /// (xact_commit, xact_rollback), after `--settle` seconds of quiet so that
    /// every backend has flushed its counts.
    async fn commits(&self) -> Result<Option<(i64, i64)>, Error> {
        let Some(stats) = &self.stats else { return Ok(None) };
        tokio::time::sleep(self.options.settle).await;
        let counts: (i64, i64) =
            sqlx::query_as("SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1")
                .bind(stats.database.clone())
                .fetch_one(&stats.admin)
                .await?;
        Ok(Some(counts))
    }

    /// Statements run in the bench database so far, and their execution
    /// time (pg_stat_statements counts at each statement's end: no wait).
    async fn statements(&self) -> Result<Option<Statements>, Error> {
        let Some(stats) = &self.stats else { return Ok(None) };
        let (calls, exec_ms, epoch): (i64, f64, String) = sqlx::query_as(
            "SELECT COALESCE(SUM(s.calls), 0)::BIGINT, COALESCE(SUM(s.total_exec_time), 0)::FLOAT8, \
             (SELECT dealloc || ' ' || stats_reset FROM pg_stat_statements_info) \
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'",
        )
        .fetch_one(&stats.reader)
        .await?;
        Ok(Some(Statements { calls, exec_ms, epoch }))
    }
}

/// A reading of pg_stat_statements for the bench database.
struct Statements {
    calls: i64,
    exec_ms: f64,
    /// Deallocations and the last reset: the server is shared, and a reset
    /// or an evicted entry between two readings makes their difference wrong.
    epoch: String,
}

/// (statements, server execution ms) per command between two readings.
fn per_command(before: Option<Statements>, after: Option<Statements>, commands: usize) -> Option<(f64, f64)> {
    let (before, after) = (before?, after?);
    if before.epoch != after.epoch {
        println!("pg_stat_statements was reset or evicted entries ({} → {}): no count", before.epoch, after.epoch);
        return None;
    }
    let commands = commands as f64;
    Some(((after.calls - before.calls) as f64 / commands, (after.exec_ms - before.exec_ms) / commands))
}

/// ProductAdded, then closed orders (reserved, then committed or — one in
/// three — released), then open reservations: `events` events in all.
fn hot_history(events: u64) -> Vec<ProductEvent> {
    let rest = events - 1;
    let mut open = (rest / 50).min(2_000);
    open += (rest - open) % 2;
    let closed = (rest - open) / 2;
    let mut history = vec![ProductEvent::ProductAdded(product::ProductAdded {
        name: "Flash-sale console".into(),
        price_cents: 49_900,
        initial_stock: 10_000_000,
    })];
    let reserved = |order_id: &str, quantity| {
        ProductEvent::StockReserved(StockReserved { order_id: order_id.into(), quantity, unit_price_cents: 49_900 })
    };
    for order in 0..closed {
        let (order_id, quantity) = (Uuid::now_v7().to_string(), 1 + (order % 3) as u32);
        history.push(reserved(&order_id, quantity));
        history.push(if order % 3 == 0 {
            ProductEvent::StockReleased(StockReleased { order_id, quantity })
        } else {
            ProductEvent::StockCommitted(StockCommitted { order_id, quantity })
        });
    }
    for order in 0..open {
        history.push(reserved(&Uuid::now_v7().to_string(), 1 + (order % 3) as u32));
    }
    history
}

/// Writes the hot product's history straight into `events` in the store's
/// row format (see the store's `rows.rs`), 1 000 rows a statement (50 on SQLite), one
/// transaction. No outbox rows: the history counts as published.
async fn seed_hot(pool: &AnyPool, sku: &str, events: u64) -> Result<(), Error> {
    // SQLite looks each `$n` up by a linear scan (sqlx asks
    // `sqlite3_bind_parameter_name` for every parameter), so a statement
    // costs O(parameters²) there: small statements are faster.
    let sqlite = pool.connect_options().database_url.scheme().starts_with("sqlite");
    let rows_per_statement = if sqlite { 50 } else { 1_000 };
    let stream = stream_id(product::AGGREGATE, sku);
    let occurred_at = to_micros(Utc::now());
    let history = hot_history(events);
    let mut tx = pool.begin().await?;
    for (chunk_index, chunk) in history.chunks(rows_per_statement).enumerate() {
        let values: Vec<String> = (0..chunk.len())
            .map(|row| {
                let params: Vec<String> = (1..=12).map(|column| format!("${}", row * 12 + column)).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO events (stream_id, event_id, aggregate_type, aggregate_id, version, type_name, \
             schema_version, payload, correlation_id, causation_id, actor, occurred_at) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for (offset, event) in chunk.iter().enumerate() {
            let (type_name, payload) = event.to_parts();
            let schema_version = ProductEvent::schema_version(&type_name).unwrap_or(1);
            let cause = Uuid::now_v7().to_string();
            query = query
                .bind(stream.clone())
                .bind(Uuid::now_v7().to_string())
                .bind(product::AGGREGATE)
                .bind(sku.to_string())
                .bind((chunk_index * rows_per_statement + offset + 1) as i64)
                .bind(type_name)
                .bind(i64::from(schema_version))
                .bind(payload.to_string())
                .bind(cause.clone())
                .bind(cause)
                .bind("hot-stream-seed")
                .bind(occurred_at);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// This process's user + system CPU time so far (Linux, 10 ms ticks).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn since(cpu: Option<Duration>) -> Option<Duration> {
    Some(process_cpu()?.saturating_sub(cpu?))
}

/// The machine is shared: how busy it was, for the record (Linux).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|value| value.is_finite());
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().filter(|_| !values.is_empty())
}

/// A run's figures by column name, as printed.
fn figures(run: &Run, options: &Options) -> HashMap<&'static str, f64> {
    let mut figures = HashMap::new();
    let concurrent = options.concurrent as f64;
    if let Some(first) = run.first_cold {
        figures.insert("first cold ms", ms(first));
    }
    if let Some(first) = run.first_warm {
        figures.insert("first warm ms", ms(first));
    }
    figures.insert("seq p50 ms", ms(percentile(&run.sequential, 0.5)));
    figures.insert("seq p99 ms", ms(percentile(&run.sequential, 0.99)));
    if let Some((statements, exec_ms)) = run.statements_per_command {
        figures.insert("stmts/cmd seq", statements);
        figures.insert("server ms/cmd seq", exec_ms);
    }
    if let Some(cpu) = run.cpu_sequential {
        figures.insert("cpu µs/cmd seq", cpu.as_secs_f64() * 1e6 / run.sequential.len().max(1) as f64);
    }
    figures.insert("conc cmds/s", concurrent / run.concurrent.as_secs_f64());
    if let Some(cpu) = run.cpu_concurrent {
        figures.insert("cpu µs/cmd conc", cpu.as_secs_f64() * 1e6 / concurrent.max(1.0));
    }
    if let Some(commits) = run.commits {
        figures.insert("commits", commits as f64);
        figures.insert("cmds/commit", concurrent / commits.max(1) as f64);
    }
    if let Some(rollbacks) = run.rollbacks {
        figures.insert("rollbacks", rollbacks as f64);
    }
    if let Some(batches) = run.batches {
        figures.insert("batches", batches as f64);
    }
    figures.insert("rejected", run.rejected as f64);
    figures
}

const COLUMNS: [&str; 14] = [
    "first cold ms",
    "first warm ms",
    "seq p50 ms",
    "seq p99 ms",
    "stmts/cmd seq",
    "server ms/cmd seq",
    "cpu µs/cmd seq",
    "conc cmds/s",
    "cpu µs/cmd conc",
    "commits",
    "cmds/commit",
    "rollbacks",
    "batches",
    "rejected",
];

fn summary(run: &Run, options: &Options) -> String {
    let figures = figures(run, options);
    COLUMNS
        .iter()
        .filter_map(|column| figures.get(column).map(|value| format!("{column} {value:.2}")))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Medians over the rounds, one markdown row per stream.
fn print_table(backend: &str, options: &Options, rows: &[Row]) {
    let columns = COLUMNS;
    println!("\n{backend}: medians of {} rounds, {} events in the hot stream", options.rounds, options.events);
    println!("| {backend} | {} |", columns.join(" | "));
    println!("|---|{}", "---:|".repeat(columns.len()));
    for row in rows {
        let all: Vec<HashMap<&str, f64>> = row.runs.iter().map(|run| figures(run, options)).collect();
        let cells: Vec<String> = columns
            .iter()
            .map(|column| {
                median(all.iter().filter_map(|figures| figures.get(column).copied()).collect())
                    .map(|value| if value >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") })
                    .unwrap_or_else(|| "–".into())
            })
            .collect();
        println!("| {} | {} |", row.label, cells.join(" | "));
    }
}
