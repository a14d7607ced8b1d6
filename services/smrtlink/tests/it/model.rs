//! The typed model on its own: roles, job states, round trips, nulls, configuration flags.

use clap::Parser as _;
use serde_json::json;
use smrtshare_smrtlink::model::{Dataset, JobPhase, JobState, Project, ProjectRequest, Role};
use smrtshare_smrtlink::{SmrtLinkArgs, config::RetryPolicy};
use std::time::Duration;

#[test]
fn roles_and_who_is_shared_with() {
    assert_eq!(Role::parse("OWNER"), Role::Owner);
    assert_eq!(Role::parse("CAN_EDIT"), Role::CanEdit);
    assert_eq!(Role::parse("CAN_VIEW"), Role::CanView);
    assert_eq!(Role::parse("can_view"), Role::CanView);
    assert_eq!(Role::parse("REVIEWER"), Role::Other("REVIEWER".into()));
    assert!(!Role::Owner.is_shared());
    assert!(Role::CanEdit.is_shared() && Role::CanView.is_shared());
    assert!(
        !Role::Other("CAN_ADMINISTER".into()).is_shared(),
        "an unknown role grants nothing"
    );
    assert_eq!(Role::Other("REVIEWER".into()).as_str(), "REVIEWER");
}

#[test]
fn job_states_map_to_pending_done_failed() {
    let phases: Vec<(&str, JobPhase)> = JobState::ALL
        .iter()
        .map(|s| (s.as_str(), s.phase()))
        .collect();
    assert_eq!(
        phases,
        [
            ("CREATED", JobPhase::Pending),
            ("SUBMITTED", JobPhase::Pending),
            ("RUNNING", JobPhase::Pending),
            ("SUCCESSFUL", JobPhase::Done),
            ("FAILED", JobPhase::Failed),
            ("TERMINATED", JobPhase::Failed),
            ("ABORTED", JobPhase::Failed),
        ]
    );
    assert_eq!(JobState::parse("PAUSED"), None);
}

#[test]
fn a_project_round_trips_through_json_and_keeps_unknown_fields() {
    let value = json!({
        "id": 7, "name": "Oats", "description": null, "state": "CREATED", "isActive": true,
        "createdAt": "2024-02-12T17:41:17.950Z", "updatedAt": "2024-03-11T20:16:38",
        "members": [{"login": "a", "role": "OWNER"}, {"login": "b", "role": "CAN_VIEW"}],
        "datasets": [{
            "id": 9, "uuid": "e950eeb9-b402-4776-84e1-9a9905aa781b", "name": "d", "path": "/x.xml",
            "projectId": 7, "isActive": true, "parentUuid": null, "numChildren": 0, "md5": "abc"
        }],
        "futureField": {"nested": true}
    });
    let project = Project::from_json(&value, "project").unwrap();
    assert_eq!(project.description, "", "null reads as absent");
    assert_eq!(project.datasets[0].parent_uuid, None);
    assert_eq!(project.datasets[0].extra["md5"], "abc");
    assert_eq!(project.extra["futureField"]["nested"], true);
    assert!(
        project.updated_at.is_some(),
        "offset-less timestamps read as UTC"
    );
    let again = Project::from_json(&serde_json::to_value(&project).unwrap(), "project").unwrap();
    assert_eq!(again, project);

    let err = Dataset::from_json(&json!({"id": 1}), "dataset").unwrap_err();
    assert_eq!(err.to_string(), "dataset.uuid: missing");
}

#[test]
fn project_requests_serialise_as_the_web_ui_sends_them() {
    let request = ProjectRequest {
        name: Some("Oats".into()),
        datasets: Some(vec![33, 34]),
        ..ProjectRequest::default()
    };
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        json!({"name": "Oats", "datasets": [{"id": 33}, {"id": 34}]})
    );
}

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    smrtlink: SmrtLinkArgs,
}

#[test]
fn command_line_flags_build_a_client_configuration() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "pw-from-file\n").unwrap();
    let cli = Cli::try_parse_from([
        "x",
        "--smrtlink-url",
        "https://sl.example.edu:8243/SMRTLink/2.0.0",
        "--smrtlink-user",
        "svc",
        "--smrtlink-password-file",
        password.to_str().unwrap(),
        "--smrtlink-timeout",
        "7s",
        "--smrtlink-attempts",
        "5",
    ])
    .unwrap();
    let config = cli.smrtlink.config().unwrap();
    assert_eq!(config.password.expose(), "pw-from-file");
    assert_eq!(
        config.effective_token_url().as_str(),
        "https://sl.example.edu:8243/token"
    );
    assert_eq!(
        config.refresh_url().as_str(),
        "https://sl.example.edu:8243/SMRTLink/2.0.0/token"
    );
    assert_eq!(config.request_timeout, Duration::from_secs(7));
    assert_eq!(config.retry.max_attempts, 5);
    assert!(!config.insecure);
    assert!(!format!("{config:?}").contains("pw-from-file"));

    // No password at all is refused; the two insecure/CA options conflict.
    let cli = Cli::try_parse_from([
        "x",
        "--smrtlink-url",
        "https://h:8243/SMRTLink/2.0.0",
        "--smrtlink-user",
        "svc",
    ])
    .unwrap();
    assert!(cli.smrtlink.config().is_err());
    assert!(
        Cli::try_parse_from([
            "x",
            "--smrtlink-url",
            "https://h/",
            "--smrtlink-user",
            "u",
            "--smrtlink-insecure",
            "--smrtlink-ca-file",
            "/ca.pem"
        ])
        .is_err()
    );
}

#[test]
fn backoff_steps_double_up_to_the_cap() {
    let policy = RetryPolicy {
        max_attempts: 6,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    let steps: Vec<u128> = (1..=5)
        .map(|a| policy.backoff().step(a).as_millis())
        .collect();
    assert_eq!(steps, [100, 200, 400, 500, 500]);
}
