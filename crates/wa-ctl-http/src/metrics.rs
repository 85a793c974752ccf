//! `/metrics`: what Prometheus scrapes, made at scrape time from the hub's
//! copy of the records (never from the loop), with `prometheus-client`.
//!
//! The crate writes OpenMetrics. Prometheus's classic text format, the
//! default here, differs in what `promtool check metrics` checks: a
//! counter's `# HELP` and `# TYPE` name the sample (`x_total`, not `x`),
//! and there is no `# EOF`. [`classic`] turns the one into the other; a
//! scraper that asks for OpenMetrics gets the crate's output as is.
//!
//! The families (docs/http-api.md has the list with their meaning):
//! `wa_ctl_session_state{session,state}` is 1 for the current state and 0
//! for every other, so that an alert can test a state's absence;
//! `wa_ctl_workers` and `wa_ctl_strays` come from a process census run off
//! the loop, as `status` counts them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use wa_ctl_core::lifecycle::State;
use wa_ctl_core::status::unix_ms;

use crate::hub::Hub;
use crate::webhook::Queue;

/// The process census's counts, taken at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Processes {
    pub(crate) workers: usize,
    pub(crate) strays: usize,
}

/// The collector: the hub and the webhook queues at scrape time.
#[derive(Debug)]
struct Surface {
    hub: Arc<Hub>,
    webhooks: Vec<Arc<Queue>>,
    processes: std::sync::Mutex<Processes>,
}

/// Makes the scrape's text. `processes` is the census taken for it.
pub(crate) struct Metrics {
    registry: Registry,
    surface: Arc<Surface>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub(crate) fn new(hub: Arc<Hub>, webhooks: Vec<Arc<Queue>>) -> Metrics {
        let surface = Arc::new(Surface {
            hub,
            webhooks,
            processes: Default::default(),
        });
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::clone(&surface)));
        Metrics { registry, surface }
    }

    /// The exposition: OpenMetrics when `openmetrics`, else the classic
    /// text format.
    pub(crate) fn render(&self, processes: Processes, openmetrics: bool) -> String {
        *self
            .surface
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = processes;
        let mut text = String::new();
        if openmetrics {
            let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
            text
        } else {
            let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.registry);
            classic(&text)
        }
    }
}

impl Collector for Surface {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let records = self.hub.records();
        let now = unix_ms(SystemTime::now());

        let mut family = encoder.encode_descriptor(
            "wa_ctl_session_state",
            "Whether the session is in the state: 1 for its current state, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for r in &records {
            for state in State::ALL {
                let labels = [("session", r.id.as_str()), ("state", state.as_str())];
                ConstGauge::new(i64::from(r.state == state))
                    .encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "wa_ctl_session_restarts",
            "Workers the supervisor started again for the session",
            None,
            MetricType::Counter,
        )?;
        for r in &records {
            ConstCounter::new(u64::from(r.restarts))
                .encode(family.encode_family(&[("session", r.id.as_str())])?)?;
        }

        let closes = self.hub.closes();
        let mut family = encoder.encode_descriptor(
            "wa_ctl_session_closes",
            "Workers of the session that ended, by close code (or crash, exit, hang)",
            None,
            MetricType::Counter,
        )?;
        for (r, by_code) in records.iter().zip(&closes) {
            for (code, n) in by_code {
                let code = code.to_string();
                let labels = [("session", r.id.as_str()), ("code", code.as_str())];
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "wa_ctl_session_connected_seconds",
            "How long the session's connection has been up; 0 when it is not connected",
            None,
            MetricType::Gauge,
        )?;
        for r in &records {
            let up = match (r.state, r.connected_at_ms) {
                (State::Connected, Some(at)) => now.saturating_sub(at) as f64 / 1000.0,
                _ => 0.0,
            };
            ConstGauge::new(up).encode(family.encode_family(&[("session", r.id.as_str())])?)?;
        }

        let processes = *self.processes.lock().unwrap_or_else(|e| e.into_inner());
        ConstGauge::new(processes.workers as i64).encode(encoder.encode_descriptor(
            "wa_ctl_workers",
            "Worker processes of this configuration, counted in the process table",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(processes.strays as i64).encode(encoder.encode_descriptor(
            "wa_ctl_strays",
            "Processes that run a configured worker command outside the supervisor",
            None,
            MetricType::Gauge,
        )?)?;

        let mut family = encoder.encode_descriptor(
            "wa_ctl_build_info",
            "The running wa-ctl's version (always 1)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64)
            .encode(family.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;

        ConstCounter::new(self.hub.events_made()).encode(encoder.encode_descriptor(
            "wa_ctl_http_events",
            "Changes sent to the event stream and the webhooks since the start",
            None,
            MetricType::Counter,
        )?)?;

        if self.webhooks.is_empty() {
            return Ok(());
        }
        let webhook_counter = |encoder: &mut DescriptorEncoder,
                               name: &'static str,
                               help: &str,
                               value: &dyn Fn(&Queue) -> u64|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for q in &self.webhooks {
                ConstCounter::new(value(q))
                    .encode(family.encode_family(&[("webhook", q.label.as_str())])?)?;
            }
            Ok(())
        };
        webhook_counter(
            &mut encoder,
            "wa_ctl_webhook_delivered",
            "Changes the webhook's receiver accepted (2xx)",
            &|q| q.delivered.load(Ordering::Relaxed),
        )?;
        webhook_counter(
            &mut encoder,
            "wa_ctl_webhook_failed_attempts",
            "Deliveries that failed and were retried (no answer, 5xx, 408, 429)",
            &|q| q.failed_attempts.load(Ordering::Relaxed),
        )?;
        webhook_counter(
            &mut encoder,
            "wa_ctl_webhook_refused",
            "Deliveries given up because the receiver refused them (4xx)",
            &|q| q.given_up.load(Ordering::Relaxed),
        )?;
        webhook_counter(
            &mut encoder,
            "wa_ctl_webhook_dropped",
            "Changes dropped, oldest first, because the webhook's queue was full",
            &|q| q.dropped.load(Ordering::Relaxed),
        )?;
        let mut family = encoder.encode_descriptor(
            "wa_ctl_webhook_queued",
            "Changes waiting to be delivered to the webhook",
            None,
            MetricType::Gauge,
        )?;
        for q in &self.webhooks {
            ConstGauge::new(q.len() as i64)
                .encode(family.encode_family(&[("webhook", q.label.as_str())])?)?;
        }
        Ok(())
    }
}

/// OpenMetrics text (without `# EOF`) to Prometheus's classic format: a
/// counter's `# HELP` and `# TYPE` lines name its `_total` sample.
pub(crate) fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None if line == "# EOF" => continue,
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_classic_format() {
        let om = "# HELP x_restarts Restarts.\n# TYPE x_restarts counter\nx_restarts_total{session=\"a\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP x_restarts_total Restarts.\n# TYPE x_restarts_total counter\nx_restarts_total{session=\"a\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }
}
