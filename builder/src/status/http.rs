//! The status page and its JSON API (read-only GETs):
//! - `/`: the page (server-rendered HTML; a small script keeps it live);
//! - `/fragment`: the page's live part, which the script fetches again after each event;
//! - `/api/nodes`: every node of the plan, the same objects as `mosboot nodes --json`;
//! - `/api/events`: the recent boot stage events, oldest first (the storm's raw timeline);
//! - `/api/stream`: server-sent events: `stage` (a stage event as in `/api/events`) as it
//!   happens, and once a second `alive` (`[{"ip", "node", "load"}]`, the nodes that reported).

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use super::timeline::{Milestone, NodeState};
use super::{Live, LiveEvent};
use crate::nodes::{NodeRow, now_ms, relative};
use crate::plan::Plan;

/// Open live streams at most; a page holds one.
const MAX_STREAMS: usize = 32;

const PAGE: &str = include_str!("page.html");
const MAIN: &str = include_str!("main.html");

/// What the handlers share.
pub struct App {
    /// The plan being served; a reload sends the next one.
    pub plan: tokio::sync::watch::Receiver<Arc<Plan>>,
    pub state: PathBuf,
    pub live: Arc<Mutex<Live>>,
    pub events: broadcast::Sender<LiveEvent>,
    streams: AtomicUsize,
    env: minijinja::Environment<'static>,
}

impl App {
    pub fn new(
        plan: tokio::sync::watch::Receiver<Arc<Plan>>,
        state: PathBuf,
        live: Arc<Mutex<Live>>,
        events: broadcast::Sender<LiveEvent>,
    ) -> App {
        let mut env = minijinja::Environment::new();
        // Both names end in .html, so minijinja escapes every value.
        env.add_template("page.html", PAGE).expect("the page template parses");
        env.add_template("main.html", MAIN).expect("the page template parses");
        App { plan, state, live, events, streams: AtomicUsize::new(0), env }
    }

    fn rows(&self, now: u64) -> (Vec<NodeRow>, u64) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let plan = self.plan.borrow().clone();
        (live.rows(&plan, &self.state, now), live.refused)
    }

    fn render(&self, name: &str) -> Response {
        let now = now_ms();
        let (rows, refused) = self.rows(now);
        let plan = self.plan.borrow().clone();
        let ctx = view(&plan, &rows, refused, now);
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "status page: render failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "render failed").into_response()
            }
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(|State(app): State<Arc<App>>| async move { app.render("page.html") }))
        .route("/fragment", get(|State(app): State<Arc<App>>| async move { app.render("main.html") }))
        .route("/api/nodes", get(api_nodes))
        .route("/api/events", get(api_events))
        .route("/api/stream", get(api_stream))
        .with_state(app)
}

async fn api_nodes(State(app): State<Arc<App>>) -> Response {
    json(&app.rows(now_ms()).0)
}

async fn api_events(State(app): State<Arc<App>>) -> Response {
    let live = app.live.lock().unwrap_or_else(|p| p.into_inner());
    json(&live.inputs.stages)
}

fn json<T: serde::Serialize>(v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Gives a stream slot back when the page goes away.
struct Slot(Arc<App>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn api_stream(State(app): State<Arc<App>>) -> Response {
    if app.streams.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
        app.streams.fetch_sub(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many open status pages").into_response();
    }
    let slot = Slot(app.clone());
    let stream = BroadcastStream::new(app.events.subscribe()).map(move |m| {
        let _held = &slot;
        Ok::<Event, Infallible>(match m {
            Ok(ev) => Event::default().event(ev.kind).data(ev.data),
            // The page missed events: it refreshes everything anyway.
            Err(_) => Event::default().event("lagged").data("{}"),
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One row as the template shows it.
#[derive(serde::Serialize)]
struct RowView {
    node: u32,
    hostname: String,
    ip: Ipv4Addr,
    mac: String,
    state: NodeState,
    state_label: &'static str,
    load: String,
    mem: String,
    uptime: String,
    openmosix: String,
    last_stage: String,
    when: String,
    steps: Vec<StepView>,
    hint: Option<String>,
    bar: Vec<Segment>,
}

#[derive(serde::Serialize)]
struct StepView {
    stage: Milestone,
    label: &'static str,
    took: String,
}

/// One coloured piece of a node's bar on the storm's time axis (percentages of the axis).
#[derive(serde::Serialize)]
struct Segment {
    stage: Milestone,
    left: String,
    width: String,
    title: String,
}

fn secs(ms: u64) -> String {
    if ms < 10_000 { format!("{:.1} s", ms as f64 / 1000.0) } else { format!("{} s", ms / 1000) }
}

/// Everything the templates need, computed here so the templates only lay it out.
fn view(plan: &Plan, rows: &[NodeRow], refused: u64, now: u64) -> minijinja::Value {
    let count = |s: NodeState| rows.iter().filter(|r| r.state == s).count();
    let (seen, never): (Vec<&NodeRow>, Vec<&NodeRow>) =
        rows.iter().partition(|r| r.state != NodeState::NeverSeen);
    // The storm's axis: from the first boot step shown to the last step (or now, while booting).
    let start = seen.iter().filter_map(|r| r.boot.first().map(|s| s.at_ms)).min();
    let busy = seen.iter().any(|r| r.state == NodeState::Booting);
    let last = seen.iter().filter_map(|r| r.boot.last().map(|s| s.at_ms)).max();
    let end = if busy { Some(now) } else { last };
    let (t0, span) = match (start, end) {
        (Some(a), Some(b)) => (a, b.saturating_sub(a).max(1000)),
        _ => (now, 1000),
    };
    let pct = |ms: u64| format!("{:.2}", ms as f64 * 100.0 / span as f64);
    let views: Vec<RowView> = seen
        .iter()
        .map(|r| {
            let mut bar = Vec::new();
            for (i, s) in r.boot.iter().enumerate() {
                let until = match r.boot.get(i + 1) {
                    Some(next) => next.at_ms,
                    None if r.state == NodeState::Booting => now.min(t0 + span),
                    None => s.at_ms,
                };
                let width = until.saturating_sub(s.at_ms);
                let left = s.at_ms.saturating_sub(t0).min(span);
                bar.push(Segment {
                    stage: s.stage,
                    left: pct(left),
                    width: pct(width.max(span / 200).min(span - left)),
                    title: format!(
                        "{} {}: {} at +{}",
                        r.hostname,
                        s.stage.label(),
                        secs(width),
                        secs(s.at_ms - t0)
                    ),
                });
            }
            RowView {
                node: r.node,
                hostname: r.hostname.clone(),
                ip: r.ip,
                mac: r.mac.clone().unwrap_or_else(|| "-".into()),
                state: r.state,
                state_label: r.state.label(),
                load: r.load.map(|l| format!("{l:.2}")).unwrap_or_default(),
                mem: r.mem_free_kb.map(|k| format!("{:.1} MB", k as f64 / 1024.0)).unwrap_or_default(),
                uptime: r
                    .uptime_s
                    .map(|u| relative(0, u).trim_end_matches(" ago").to_string())
                    .unwrap_or_default(),
                openmosix: r.openmosix.clone().unwrap_or_default(),
                last_stage: r.last_stage.clone().unwrap_or_else(|| "-".into()),
                when: r.last_stage_at.map(|t| relative(t, now / 1000)).unwrap_or_default(),
                steps: r
                    .boot
                    .iter()
                    .map(|s| StepView {
                        stage: s.stage,
                        label: s.stage.label(),
                        took: s.took_ms.map(|t| format!("+{}", secs(t))).unwrap_or_default(),
                    })
                    .collect(),
                hint: r.hint.clone(),
                bar,
            }
        })
        .collect();
    minijinja::context! {
        cluster => plan.cluster.clone(),
        server => plan.server.to_string(),
        up => count(NodeState::Up),
        booting => count(NodeState::Booting),
        down => count(NodeState::Down),
        never => never.iter().map(|r| format!("{} {}", r.node, r.hostname)).collect::<Vec<_>>(),
        rows => views,
        stages => Milestone::ALL.iter().map(|m| minijinja::context! { stage => *m, label => m.label() }).collect::<Vec<_>>(),
        span => secs(span),
        refused => refused,
    }
}
