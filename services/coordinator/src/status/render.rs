//! The status page as HTML, built as strings. Every value read from the store (project names
//! come from SMRT Link and are hostile input; messages come from services and Globus) goes
//! through [`esc`], in text and in attributes alike; nothing else reaches the page unescaped.

use std::fmt::Write as _;

use super::snapshot::{Health, PendingJob, ProjectStatus, ReportView, Snapshot, TargetStatus};
use crate::model::ChangeStatus;
use crate::store::ChangeRow;

/// Most report items listed per task; the rest are counted.
const MOST_ITEMS: usize = 50;

/// Escapes text for HTML text and quoted attribute values. Line breaks and tabs become numeric
/// references (so no value can end a line of a server-sent event) and other control characters
/// the replacement character.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if c.is_control() => out.push_str("&#xFFFD;"),
            c => out.push(c),
        }
    }
    out
}

/// Epoch milliseconds as UTC text ("—" for never).
pub fn time(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) if ms > 0 => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        _ => "—".to_owned(),
    }
}

/// `1 dataset`, `2 datasets` (`noun` is the page's own text, not a value).
fn count<N: std::fmt::Display + PartialEq + From<u8>>(n: N, noun: &str) -> String {
    let one = n == N::from(1);
    format!("{n} {noun}{}", if one { "" } else { "s" })
}

fn badge(out: &mut String, class: &str, text: &str) {
    let _ = write!(
        out,
        r#"<span class="badge {}">{}</span>"#,
        esc(class),
        esc(text)
    );
}

fn change_badge(out: &mut String, status: ChangeStatus) {
    let (class, text) = match status {
        ChangeStatus::Ok => ("ok", "OK"),
        ChangeStatus::InProgress => ("busy", "IN PROGRESS"),
        ChangeStatus::Partial => ("failed", "PARTIAL"),
        ChangeStatus::Failed => ("failed", "FAILED"),
    };
    badge(out, class, text);
}

fn target_badge(out: &mut String, target: Option<&TargetStatus>) {
    match target {
        None => badge(out, "none", "no task"),
        Some(t) => {
            let class = match t.label() {
                "OK" | "REMOVED" => "ok",
                "FAILED" => "failed",
                _ => "busy",
            };
            badge(out, class, t.label());
        }
    }
}

fn health_class(health: Health) -> &'static str {
    match health {
        Health::Failed => "failed",
        Health::Busy => "busy",
        Health::Ok => "ok",
    }
}

/// The part of the page that updates itself: a summary, the page's resync outcome (`notice`,
/// already HTML), failures in full, unresolved members and every project.
pub fn fragment(snapshot: &Snapshot, notice: &str) -> String {
    let mut out = String::with_capacity(4096 + snapshot.projects.len() * 400);
    let with_health = |h| snapshot.projects.iter().filter(|p| p.health == h).count();
    let live = snapshot
        .projects
        .iter()
        .filter(|p| !p.project.deleted)
        .count();
    let _ = write!(
        out,
        r#"<section class="summary" id="summary"><p><strong>{live}</strong> projects: "#
    );
    let counts = [
        ("failed", with_health(Health::Failed), "failing"),
        ("busy", with_health(Health::Busy), "in progress"),
        ("ok", with_health(Health::Ok), "in step"),
    ];
    for (class, n, what) in counts {
        badge(&mut out, class, &format!("{n} {what}"));
    }
    if snapshot.removed > 0 {
        let _ = write!(out, " ({} removed projects not listed)", snapshot.removed);
    }
    out.push_str("</p>");
    out.push_str(notice);
    out.push_str("</section>");

    let failed: Vec<&ProjectStatus> = snapshot
        .projects
        .iter()
        .filter(|p| p.health == Health::Failed)
        .collect();
    if !failed.is_empty() {
        out.push_str(r#"<section id="failures"><h2>Failures</h2>"#);
        for project in failed {
            failure(&mut out, project);
        }
        out.push_str("</section>");
    }
    if !snapshot.unresolved.is_empty() {
        out.push_str(
            r#"<section id="unresolved"><h2>Unresolved members</h2><p class="hint">SMRT Link logins that map to no Globus identity, in each project's newest access report. They are granted once the identity exists and the project changes or a resync runs.</p><table class="stack"><thead><tr><th>Login</th><th>Project</th><th>Why</th></tr></thead><tbody>"#,
        );
        for u in &snapshot.unresolved {
            let _ = write!(
                out,
                r#"<tr><td data-label="Login"><div>{}</div></td><td data-label="Project"><div>{} {}</div></td><td data-label="Why"><div>{}</div></td></tr>"#,
                esc(&u.login),
                u.project_id,
                esc(&u.project_name),
                esc(&u.message)
            );
        }
        out.push_str("</tbody></table></section>");
    }
    if !snapshot.pending_analysis_jobs.is_empty() {
        pending_jobs(&mut out, &snapshot.pending_analysis_jobs);
    }
    projects(&mut out, &snapshot.projects);
    out
}

fn pending_jobs(out: &mut String, jobs: &[PendingJob]) {
    out.push_str(
        r#"<section id="analysis"><h2>Pending analysis jobs</h2><p class="hint">Jobs of shared projects that SMRT Link has not finished. Each is looked at again until its state is final; a successful job's outputs are then staged in its project.</p><table class="stack"><thead><tr><th>Job</th><th>Project</th><th>State</th><th>Next look</th></tr></thead><tbody>"#,
    );
    for p in jobs.iter().take(MOST_ITEMS) {
        let j = &p.job;
        let _ = write!(
            out,
            r#"<tr id="job-{id}"><td data-label="Job"><div><span class="pid">{id}</span> {name}</div></td><td data-label="Project"><div><span class="pid">{pid}</span> {project}</div></td><td data-label="State"><div>"#,
            id = j.job_id,
            name = esc(&j.name),
            pid = j.project_id,
            project = esc(&p.project_name),
        );
        badge(out, "busy", &j.state);
        if !j.message.is_empty() {
            let _ = write!(
                out,
                r#"<br><span class="message">{}</span>"#,
                esc(&j.message)
            );
        }
        let _ = write!(
            out,
            r#"</div></td><td data-label="Next look"><div>{} <small>({} so far)</small></div></td></tr>"#,
            time(j.next_check_at),
            count(j.checks, "look")
        );
    }
    out.push_str("</tbody></table>");
    if jobs.len() > MOST_ITEMS {
        let _ = write!(
            out,
            r#"<p class="hint">and {} more (GetProject lists each project's jobs)</p>"#,
            jobs.len() - MOST_ITEMS
        );
    }
    out.push_str("</section>");
}

fn projects(out: &mut String, projects: &[ProjectStatus]) {
    out.push_str(r#"<section id="projects"><h2>Projects</h2>"#);
    if projects.is_empty() {
        out.push_str(
            r#"<p class="hint">No projects known yet: the coordinator reads SMRT Link's projects at start and at every resync.</p></section>"#,
        );
        return;
    }
    out.push_str(r#"<table class="stack projects"><thead><tr><th>Project</th><th>Staging</th><th>Access</th><th>Last change</th></tr></thead><tbody>"#);
    for p in projects {
        let s = &p.project;
        let _ = write!(
            out,
            r#"<tr id="project-{id}" class="{class}" data-health="{class}"><td data-label="Project"><div><span class="name"><span class="pid">{id}</span> {name}</span>"#,
            id = s.project_id,
            class = health_class(p.health),
            name = esc(&s.name),
        );
        if s.deleted {
            out.push_str(r#" <em>(deleted in SMRT Link)</em>"#);
        }
        let _ = write!(
            out,
            r#"<small>{} · {}</small></div></td><td data-label="Staging"><div>"#,
            count(s.datasets, "dataset"),
            count(s.members, "member")
        );
        target_badge(out, p.staging.as_ref());
        out.push_str(r#"</div></td><td data-label="Access"><div>"#);
        target_badge(out, p.access.as_ref());
        out.push_str(r#"</div></td><td data-label="Last change"><div>"#);
        match &p.last_change {
            Some(c) => {
                let _ = write!(out, "#{} ", c.change_id);
                change_badge(out, c.status);
                let _ = write!(out, " <small>{}</small>", time(c.created_at));
            }
            None => out.push('—'),
        }
        out.push_str("</div></td></tr>");
    }
    out.push_str("</tbody></table></section>");
}

fn failure(out: &mut String, p: &ProjectStatus) {
    let s = &p.project;
    let _ = write!(
        out,
        r#"<article class="card failed" id="failure-{id}" data-project="{id}"><h3><span class="pid">{id}</span> {name}</h3><p class="meta">Directory <code>{dir}</code></p>"#,
        id = s.project_id,
        name = esc(&s.name),
        dir = esc(&s.directory),
    );
    if let Some(c) = &p.last_change {
        last_change(out, c);
    }
    for (name, target) in [("staging", &p.staging), ("access", &p.access)] {
        if let Some(t) = target {
            task(out, name, t);
        }
    }
    out.push_str("</article>");
}

fn last_change(out: &mut String, c: &ChangeRow) {
    let _ = write!(out, r#"<p class="change">Last change #{} "#, c.change_id);
    change_badge(out, c.status);
    let _ = write!(
        out,
        " <small>{} {} · {}</small>",
        esc(&c.reason.as_str().to_lowercase()),
        esc(&c.kind.as_str().to_lowercase().replace('_', " ")),
        time(c.created_at)
    );
    if !c.request.is_empty() {
        let _ = write!(out, " <code>{}</code>", esc(&c.request));
    }
    if !c.message.is_empty() {
        let _ = write!(
            out,
            r#"<br><span class="message">{}</span>"#,
            esc(&c.message)
        );
    }
    out.push_str("</p>");
}

fn task(out: &mut String, name: &str, t: &TargetStatus) {
    let class = if t.label() == "FAILED" { "failed" } else { "" };
    let _ = write!(
        out,
        r#"<div class="task {class}" data-target="{name}"><h4>{name} "#
    );
    target_badge(out, Some(t));
    let _ = write!(
        out,
        " <small>task {} · {} attempt{} · {}</small></h4>",
        t.task.task_id,
        t.task.attempts,
        if t.task.attempts == 1 { "" } else { "s" },
        time(t.task.finished_at)
    );
    if !t.task.last_message.is_empty() {
        let _ = write!(
            out,
            r#"<p class="message">{}</p>"#,
            esc(&t.task.last_message)
        );
    }
    if let Some(report) = &t.report {
        report_table(out, report);
    }
    out.push_str("</div>");
}

fn report_table(out: &mut String, r: &ReportView) {
    if !r.problems.is_empty() {
        let mut letters = r.noun.chars();
        let heading: String = letters
            .next()
            .map(|first| first.to_uppercase().chain(letters).collect())
            .unwrap_or_default();
        let heading = esc(&heading);
        let _ = write!(
            out,
            r#"<table class="stack report"><thead><tr><th>{heading}</th><th>Outcome</th><th>Why</th></tr></thead><tbody>"#
        );
        for item in r.problems.iter().take(MOST_ITEMS) {
            let _ = write!(
                out,
                r#"<tr><td data-label="{heading}"><div><code>{}</code></div></td><td data-label="Outcome"><div>{}{}</div></td><td data-label="Why"><div class="message">{}</div></td></tr>"#,
                esc(&item.subject),
                esc(&item.outcome),
                if item.permanent {
                    " <small>(final)</small>"
                } else {
                    ""
                },
                esc(&item.message)
            );
        }
        out.push_str("</tbody></table>");
        if r.problems.len() > MOST_ITEMS {
            let _ = write!(
                out,
                r#"<p class="hint">and {} more (GetChange lists them all)</p>"#,
                r.problems.len() - MOST_ITEMS
            );
        }
    }
    let _ = write!(
        out,
        r#"<p class="hint">{} fine{}</p>"#,
        count(
            r.fine,
            &format!(
                "{}{}",
                if r.problems.is_empty() { "" } else { "other " },
                r.noun
            )
        ),
        if r.truncated {
            "; the service's report was cut to fit"
        } else {
            ""
        }
    );
}

/// The whole page: the header (per viewer: the sign-out and resync forms carry the session's
/// CSRF token) around the fragment.
pub fn page(fragment: &str, header: &Header<'_>) -> String {
    let mut out = String::with_capacity(fragment.len() + 2048);
    out.push_str(HEAD);
    let _ = write!(
        out,
        r#"<header><h1>smrtshare status</h1><p class="as-of"><span id="live" class="live">as of {}</span></p><div class="actions">"#,
        esc(header.as_of)
    );
    if header.resync {
        let _ = write!(
            out,
            r#"<form method="post" action="/resync"><input type="hidden" name="csrf" value="{}"><button type="submit" id="resync">Resync now</button></form>"#,
            esc(header.csrf)
        );
    }
    if header.signed_in {
        let _ = write!(
            out,
            r#"<form method="post" action="/logout"><input type="hidden" name="csrf" value="{}"><button type="submit" class="quiet">Sign out</button></form>"#,
            esc(header.csrf)
        );
    }
    out.push_str(r#"</div></header><main id="status">"#);
    out.push_str(fragment);
    out.push_str("</main></body></html>");
    out
}

/// What the header shows to one viewer.
#[derive(Debug)]
pub struct Header<'a> {
    /// When the data was read.
    pub as_of: &'a str,
    /// Show the resync button.
    pub resync: bool,
    /// Show the sign-out button.
    pub signed_in: bool,
    /// The session's CSRF token.
    pub csrf: &'a str,
}

/// The sign-in form, with an optional error line.
pub fn login(error: Option<&str>) -> String {
    let mut out = String::from(HEAD);
    out.push_str(
        r#"<header><h1>smrtshare status</h1></header><main><form method="post" action="/login" class="login"><label for="token">Access token</label><input type="password" id="token" name="token" autocomplete="current-password" required autofocus>"#,
    );
    if let Some(error) = error {
        let _ = write!(out, r#"<p class="error" role="alert">{}</p>"#, esc(error));
    }
    out.push_str(r#"<button type="submit" id="sign-in">Sign in</button><p class="hint">The coordinator's bearer token (the one grpcurl sends), or the read-only status-page token when one is set. The session lasts until you sign out, or for the configured session time.</p></form></main></body></html>"#);
    out
}

/// The document head: styles and the script that follows the server-sent events; without
/// JavaScript the page reloads itself every 10 s instead.
const HEAD: &str = r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>smrtshare status</title><link rel="stylesheet" href="/static/status.css"><script src="/static/status.js" defer></script><noscript><meta http-equiv="refresh" content="10"></noscript></head><body>"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_quotes_and_control_characters() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(esc("a\r\nb\0\u{1b}"), "a&#13;&#10;b&#xFFFD;&#xFFFD;");
        assert_eq!(esc("Tomate ü 🍅"), "Tomate ü 🍅");
    }

    #[test]
    fn times_are_utc_and_never_is_a_dash() {
        assert_eq!(time(0), "—");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}
