//! kill -9 of each service in turn during a burst of 200 project changes made in the SMRT Link
//! web UI and mirrored to the intake: after a restart the system converges to SMRT Link's state,
//! no change is left in progress, and what people made by hand (a file in a project directory,
//! a rule at Globus) is untouched.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use smrtshare_api::coordinator::v1 as pb;
use smrtshare_smrtlink::model::{Member, ProjectRequest, Role};
use smrtshare_tests::smrtlink::{Mirrored, WebUi};
use smrtshare_tests::stack::{MEMBERS, OUTSIDER};
use smrtshare_tests::world::{self, wait_converged};
use smrtshare_tests::{Service, Stack, StackOptions};

/// Changes in the burst.
const CHANGES: usize = 200;
/// The victim is killed before this change…
const KILL_AT: usize = 50;
/// …and started again before this one.
const RESTART_AT: usize = 120;
/// Plain datasets (no parent, no children) that move between projects.
const MOVABLE: [i64; 3] = [106, 107, 108];
/// The project whose directory holds the user's file: never renamed or deleted.
const KEPT: i64 = 2;

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn members(rng: &mut Rng) -> Vec<Member> {
    let mut out = vec![Member::new("admin", Role::Owner)];
    for login in MEMBERS {
        match rng.below(3) {
            0 => out.push(Member::new(login, Role::CanView)),
            1 => out.push(Member::new(login, Role::CanEdit)),
            _ => {}
        }
    }
    out
}

#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    refused: Vec<String>,
    kinds: std::collections::BTreeMap<&'static str, usize>,
}

impl Tally {
    fn mirrored(&mut self, kind: &'static str, result: Mirrored) {
        *self.kinds.entry(kind).or_default() += 1;
        match result {
            m if m.accepted() => self.accepted += 1,
            Mirrored::Answered(status) => panic!("the intake answered {status} to a {kind}"),
            Mirrored::Failed(error) => self.refused.push(error),
        }
    }
}

/// One web-UI change, chosen by `rng` among the live projects.
async fn one_change(
    web: &mut WebUi,
    rng: &mut Rng,
    live: &mut Vec<i64>,
    n: usize,
    tally: &mut Tally,
) {
    let roll = rng.below(100);
    let renamable: Vec<i64> = live.iter().copied().filter(|p| *p != KEPT).collect();
    if roll < 45 {
        let project = rng.pick(live);
        let request = ProjectRequest {
            members: Some(members(rng)),
            ..ProjectRequest::default()
        };
        let (_, m) = web.update_project(project, &request).await.unwrap();
        tally.mirrored("members", m);
    } else if roll < 60 {
        let project = rng.pick(live);
        let dataset = rng.pick(&MOVABLE);
        let current = web.client().get_project(project).await.unwrap().unwrap();
        let mut ids: Vec<i64> = current.datasets.iter().map(|d| d.id).collect();
        if ids.contains(&dataset) {
            ids.retain(|d| *d != dataset);
        } else {
            ids.push(dataset);
        }
        let request = ProjectRequest {
            datasets: Some(ids),
            ..ProjectRequest::default()
        };
        let (_, m) = web.update_project(project, &request).await.unwrap();
        tally.mirrored("datasets", m);
    } else if roll < 75 && !renamable.is_empty() {
        let project = rng.pick(&renamable);
        let request = ProjectRequest {
            name: Some(format!("Crop {project} rev {n}")),
            ..ProjectRequest::default()
        };
        let (_, m) = web.update_project(project, &request).await.unwrap();
        tally.mirrored("rename", m);
    } else if roll < 90 || renamable.len() < 3 {
        let request = ProjectRequest {
            name: Some(format!("Crop {n}")),
            description: Some("made during the burst".into()),
            members: Some(members(rng)),
            datasets: None,
        };
        let (project, m) = web.create_project(&request).await.unwrap();
        live.push(project.id);
        tally.mirrored("create", m);
    } else {
        let project = rng.pick(&renamable);
        live.retain(|p| *p != project);
        let m = web.delete_project(project).await.unwrap();
        tally.mirrored("delete", m);
    }
}

/// Kills `victim` while it is in the middle of work: the coordinator while it reads SMRT Link
/// (project reads slowed), access after Globus made a rule but before access heard the answer
/// (answers to creates held back); staging wherever the burst has it. True when it made this
/// turn's change itself.
async fn kill_mid_flight(
    stack: &mut Stack,
    web: &mut WebUi,
    live: &mut Vec<i64>,
    tally: &mut Tally,
    victim: Service,
) -> bool {
    let everyone: Vec<Member> = std::iter::once(Member::new("admin", Role::Owner))
        .chain(MEMBERS.iter().map(|m| Member::new(*m, Role::CanView)))
        .collect();
    match victim {
        Service::Coordinator => {
            let admin = stack.smrtlink_admin();
            admin
                .set_faults(json!({"delay_ms": 1500, "endpoints": ["get_project"]}))
                .await
                .unwrap();
            let reads = admin.requests("get_project").await.unwrap();
            let request = ProjectRequest {
                members: Some(everyone),
                ..ProjectRequest::default()
            };
            let (_, m) = web.update_project(KEPT, &request).await.unwrap();
            tally.mirrored("members", m);
            // Once the settle delay has passed, a reader asks for the project and waits for
            // the slowed answer: kill it then.
            let started = Instant::now();
            while admin.requests("get_project").await.unwrap() == reads {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the coordinator read no project"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stack.kill(victim).unwrap();
            admin.clear_faults().await.unwrap();
            true
        }
        Service::Access => {
            let globus = stack.globus();
            globus
                .set_faults(&json!({
                    "share": 1.0,
                    "mix": [{"fault": "slow_answer", "millis": 3000, "weight": 1}],
                    "kinds": ["create"],
                }))
                .await
                .unwrap();
            let request = ProjectRequest {
                name: Some("Mid-flight".into()),
                members: Some(everyone),
                ..ProjectRequest::default()
            };
            let (project, m) = web.create_project(&request).await.unwrap();
            live.push(project.id);
            tally.mirrored("create", m);
            // Globus made the rule; access waits for the answer.
            let path = format!("/Project {}: Mid-flight/", project.id);
            let started = Instant::now();
            while !globus
                .rules()
                .await
                .unwrap()
                .iter()
                .any(|r| r.path == path && r.made_by.starts_with("client:"))
            {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "no rule was created on {path}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stack.kill(victim).unwrap();
            globus.clear_faults().await.unwrap();
            true
        }
        _ => {
            stack.kill(victim).unwrap();
            false
        }
    }
}

async fn burst_with_kill(victim: Service, seed: u64) {
    let mut stack = Stack::start(StackOptions {
        coordinator_args: vec![
            // Deletions lost while the coordinator is down are many next to the few projects of
            // this test; the startup renewal may remove them all but project 2 (the resync test
            // covers the refusal).
            "--resync-max-removal-share".into(),
            "0.9".into(),
            // Claims of the killed coordinator (tasks it was running, changes it was reading)
            // lapse after their leases: keep them short.
            "--peer-timeout".into(),
            "5s".into(),
            "--task-lease".into(),
            "6s".into(),
            "--smrtlink-timeout".into(),
            "3s".into(),
            "--read-lease".into(),
            "4s".into(),
        ],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let started = Instant::now();

    // What people made by hand: a file in Tomato's directory, a rule for someone outside SMRT
    // Link on the same directory.
    let user_file: PathBuf = stack
        .root()
        .join("Project 2: Tomato")
        .join("notes from alice.txt");
    std::fs::write(&user_file, "alice's own notes\n").unwrap();
    let globus = stack.globus();
    let person_rule = globus
        .add_person_rule(OUTSIDER, "/Project 2: Tomato/")
        .await
        .unwrap();
    let by_hand = |rules: &[smrtshare_tests::globus::GlobusRule]| {
        rules
            .iter()
            .filter(|r| r.made_by == "person")
            .cloned()
            .collect::<Vec<_>>()
    };
    let hand_rules = by_hand(&globus.rules().await.unwrap());
    assert_eq!(hand_rules.len(), 1);
    assert_eq!(hand_rules[0].id, person_rule);

    let mut web = stack.web_ui().unwrap();
    let mut rng = Rng(seed);
    let mut live = vec![2, 3, 4];
    let mut tally = Tally::default();
    for n in 0..CHANGES {
        if n == KILL_AT
            && kill_mid_flight(&mut stack, &mut web, &mut live, &mut tally, victim).await
        {
            continue;
        }
        if n == RESTART_AT {
            stack.restart(victim).await.unwrap();
        }
        one_change(&mut web, &mut rng, &mut live, n, &mut tally).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst = started.elapsed();
    eprintln!("{victim}: burst of {CHANGES} in {burst:?}: {tally:?}");
    if victim == Service::Coordinator {
        assert!(
            !tally.refused.is_empty(),
            "the intake answered while the coordinator was killed"
        );
    } else {
        assert_eq!(tally.accepted, CHANGES, "{tally:?}");
    }

    // The system converges to SMRT Link's state, with nothing in progress.
    let expected = wait_converged(
        &stack,
        std::slice::from_ref(&user_file),
        Duration::from_secs(50),
    )
    .await
    .unwrap_or_else(|e| panic!("{victim} killed: {e:#}"));
    eprintln!(
        "{victim}: converged {:?} after the burst; {} projects",
        started.elapsed() - burst,
        expected.len()
    );
    stack.check_running().unwrap();
    assert!(expected.len() >= 3, "{expected:?}");
    assert!(expected.contains_key(&KEPT));

    // No change lost: every recorded change is final; mirrored changes were recorded.
    let changes = world::changes(&stack, pb::ChangeStatus::Unspecified)
        .await
        .unwrap();
    let in_progress: Vec<i64> = changes
        .iter()
        .filter(|c| !world::is_final(c))
        .map(|c| c.change_id)
        .collect();
    assert!(in_progress.is_empty(), "{in_progress:?}");
    let mirrored = changes
        .iter()
        .filter(|c| c.reason == pb::ChangeReason::Mirror as i32)
        .count();
    assert!(mirrored > 0, "no mirrored change recorded");
    let failed: Vec<&pb::Change> = changes
        .iter()
        .filter(|c| c.status == pb::ChangeStatus::Failed as i32)
        .collect();
    let partial = changes
        .iter()
        .filter(|c| c.status == pb::ChangeStatus::Partial as i32)
        .count();
    eprintln!(
        "{victim}: {} changes, {mirrored} mirrored, {partial} partial, {} failed",
        changes.len(),
        failed.len()
    );

    // What people made by hand is untouched.
    assert_eq!(
        std::fs::read_to_string(&user_file).unwrap(),
        "alice's own notes\n"
    );
    assert_eq!(by_hand(&globus.rules().await.unwrap()), hand_rules);

    // The victim really died and came back.
    let log = std::fs::read_to_string(stack.log(victim)).unwrap();
    assert_eq!(
        log.matches("grpc server listening").count(),
        2,
        "{victim} was not restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_staging_during_a_burst() {
    burst_with_kill(Service::Staging, 0x5eed_0001).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_access_during_a_burst() {
    burst_with_kill(Service::Access, 0x5eed_0002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_coordinator_during_a_burst() {
    burst_with_kill(Service::Coordinator, 0x5eed_0003).await;
}
