//! Answers that always fit in one gRPC message. The work is done before the answer is encoded, so
//! an answer that is too large would lose the report of work already done (tonic answers
//! OUT_OF_RANGE after the fact). Every action is counted by kind and outcome; as many actions as
//! fit are listed in full, in order, and never more than [`MAX_LISTED_ACTIONS`]; dataset errors
//! are cut shorter, then paths left out, only when the per-dataset results alone would not fit. A
//! request whose smallest possible answer would not fit is refused before any work
//! ([`check_room`]).

use std::collections::BTreeMap;

use smrtshare_api::staging::v1 as pb;
use smrtshare_common::names::truncate;
use tonic_prost::prost::Message as _;

/// Most actions listed in full in one answer.
pub const MAX_LISTED_ACTIONS: usize = 10_000;

/// Room kept for the message frame and rounding.
const HEADROOM: usize = 1024;

/// What the smallest answer needs per dataset: its UUID, state and file count.
const MIN_BYTES_PER_DATASET: usize = 64;

/// Every action counted by kind and outcome.
pub fn counts(actions: &[pb::Action]) -> Vec<pb::ActionCount> {
    let mut by: BTreeMap<(i32, i32), u64> = BTreeMap::new();
    for a in actions {
        *by.entry((a.kind, a.outcome)).or_default() += 1;
    }
    by.into_iter()
        .map(|((kind, outcome), count)| pb::ActionCount {
            kind,
            outcome,
            count,
        })
        .collect()
}

/// Refuses a request with more datasets and analysis jobs than one answer of `limit` bytes can
/// report.
pub fn check_room(items: usize, limit: usize) -> Result<(), String> {
    let most = limit.saturating_sub(HEADROOM) / MIN_BYTES_PER_DATASET;
    if items > most {
        return Err(format!(
            "{items} datasets and analysis jobs are more than one answer can report within the \
             {limit}-byte message limit (at most {most})"
        ));
    }
    Ok(())
}

/// Bytes a repeated message field's items take on the wire.
fn field_len<M: tonic_prost::prost::Message>(items: &[M]) -> usize {
    items
        .iter()
        .map(|m| {
            let len = m.encoded_len();
            1 + tonic_prost::prost::length_delimiter_len(len) + len
        })
        .sum()
}

/// Keeps the first actions that fit in `room` bytes (at most [`MAX_LISTED_ACTIONS`]).
fn fit_actions(actions: &mut Vec<pb::Action>, room: usize) {
    let mut used = 0;
    let keep = actions
        .iter()
        .take(MAX_LISTED_ACTIONS)
        .take_while(|a| {
            used += field_len(std::slice::from_ref(*a));
            used <= room
        })
        .count();
    actions.truncate(keep);
}

/// Cuts `text` to `max` bytes, marking the cut.
fn cut(text: &mut String, max: usize) {
    const MARK: &str = " [cut]";
    if text.len() > max {
        truncate(text, max.saturating_sub(MARK.len()));
        text.push_str(MARK);
    }
}

/// Fits an ApplyProject answer in `limit` bytes.
pub fn fit_apply(answer: &mut pb::ApplyProjectResponse, limit: usize) {
    let limit = limit.saturating_sub(HEADROOM);
    let total = answer.actions.len();
    let actions = std::mem::take(&mut answer.actions);
    for step in 0.. {
        let rest = answer.encoded_len();
        if rest <= limit || step > 4 {
            answer.actions = actions;
            fit_actions(&mut answer.actions, limit.saturating_sub(rest));
            break;
        }
        // The per-item results alone are too large: errors shorter, then paths left out.
        let items = answer
            .datasets
            .iter_mut()
            .map(|d| (&mut d.error, &mut d.path));
        let jobs = answer
            .analysis
            .iter_mut()
            .map(|j| (&mut j.error, &mut j.path));
        for (error, path) in items.chain(jobs) {
            match step {
                0 => cut(error, 2048),
                1 => cut(error, 256),
                2 => cut(error, 64),
                _ => path.clear(),
            }
        }
    }
    if answer.actions.len() < total {
        tracing::info!(
            project = answer.project_id,
            listed = answer.actions.len(),
            total,
            "answer lists the first actions only (the rest are counted) to fit the message limit"
        );
    }
}

/// Fits a RemoveProject answer in `limit` bytes: foreign paths first, then actions.
pub fn fit_remove(answer: &mut pb::RemoveProjectResponse, limit: usize) {
    let limit = limit.saturating_sub(HEADROOM);
    let total = answer.actions.len();
    let actions = std::mem::take(&mut answer.actions);
    let paths = std::mem::take(&mut answer.foreign_paths);
    let rest = answer.encoded_len();
    let mut used = rest;
    let keep = paths
        .iter()
        .take_while(|p| {
            used += 1 + tonic_prost::prost::length_delimiter_len(p.len()) + p.len();
            used <= limit / 2
        })
        .count();
    answer.foreign_paths = paths;
    answer.foreign_paths.truncate(keep);
    answer.actions = actions;
    let room = limit.saturating_sub(answer.encoded_len() - field_len(&answer.actions));
    fit_actions(&mut answer.actions, room);
    if answer.actions.len() < total {
        tracing::info!(
            project = answer.project_id,
            listed = answer.actions.len(),
            total,
            "answer lists the first actions only (the rest are counted) to fit the message limit"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn action(n: usize) -> pb::Action {
        pb::Action {
            kind: pb::ActionKind::LinkFile as i32,
            path: format!("Project 2/Movie m - x/file{n:06}.bam"),
            outcome: pb::ActionOutcome::Done as i32,
            ..pb::Action::default()
        }
    }

    #[test]
    fn a_large_answer_is_cut_to_fit_and_everything_is_counted() {
        let actions: Vec<pb::Action> = (0..20_000).map(action).collect();
        let mut answer = pb::ApplyProjectResponse {
            project_id: 2,
            actions_total: 20_000,
            action_counts: counts(&actions),
            actions,
            datasets: (0..300)
                .map(|i| pb::DatasetResult {
                    uuid: format!("{i:036}"),
                    error: "e".repeat(10_000),
                    state: pb::DatasetState::Failed as i32,
                    ..pb::DatasetResult::default()
                })
                .collect(),
            ..pb::ApplyProjectResponse::default()
        };
        fit_apply(&mut answer, 1 << 20);
        assert!(answer.encoded_len() <= 1 << 20);
        assert!(answer.datasets.iter().all(|d| d.error.ends_with(" [cut]")));
        assert_eq!(answer.datasets.len(), 300);
        assert!(!answer.actions.is_empty() && answer.actions.len() < 20_000);
        assert_eq!(answer.actions[0].path, action(0).path, "the first ones");
        assert_eq!(
            answer.action_counts,
            vec![pb::ActionCount {
                kind: pb::ActionKind::LinkFile as i32,
                outcome: pb::ActionOutcome::Done as i32,
                count: 20_000
            }]
        );
        let mut small = pb::ApplyProjectResponse {
            actions: (0..3).map(action).collect(),
            ..pb::ApplyProjectResponse::default()
        };
        fit_apply(&mut small, 1 << 20);
        assert_eq!(small.actions.len(), 3, "a small answer is whole");
    }

    #[test]
    fn too_many_datasets_for_any_answer_are_refused_up_front() {
        assert!(check_room(1000, 16 << 20).is_ok());
        assert!(
            check_room(300_000, 16 << 20)
                .unwrap_err()
                .contains("at most")
        );
    }
}
