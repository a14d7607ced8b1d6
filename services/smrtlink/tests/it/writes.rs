//! Changes through the web UI's endpoints and through the admin API, read back by the client.

use serde_json::json;
use smrtshare_smrtlink::model::{
    AnalysisJobRequest, EntryPointRequest, JobPhase, JobState, Member, ProjectRequest, Role,
};
use smrtshare_smrtlink::{Error, SmrtLinkClient};
use smrtshare_smrtlink_standin::{Endpoint, NewProject};
use uuid::Uuid;

use crate::support::{USER, child_20, child_21, fixture, parent};

async fn ids(client: &SmrtLinkClient) -> Vec<i64> {
    let mut ids: Vec<i64> = client
        .list_projects()
        .await
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn dataset_uuids(p: &smrtshare_smrtlink::model::Project) -> Vec<Uuid> {
    p.datasets.iter().map(|d| d.uuid).collect()
}

#[tokio::test]
async fn web_ui_create_update_with_dataset_stealing_and_delete() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();

    // Create: new id, the creator becomes owner, child 21 moves in from project 1's record.
    let created = client
        .create_project(&ProjectRequest {
            name: Some("Rice".into()),
            description: Some("rice panel".into()),
            members: Some(vec![Member::new("carol", Role::CanView)]),
            datasets: Some(vec![34]),
        })
        .await
        .unwrap();
    let id = created.id;
    assert_eq!(id, 3);
    assert_eq!(fx.standin.count(Endpoint::CreateProject), 1);
    let rice = client.get_project(id).await.unwrap().unwrap();
    assert_eq!(rice.name, "Rice");
    let members: Vec<(&str, &Role)> = rice
        .members
        .iter()
        .map(|m| (m.login.as_str(), &m.role))
        .collect();
    assert_eq!(members, [(USER, &Role::Owner), ("carol", &Role::CanView)]);
    assert_eq!(dataset_uuids(&rice), [child_21()]);
    assert_eq!(
        client
            .get_dataset(child_21())
            .await
            .unwrap()
            .unwrap()
            .project_id,
        id
    );
    assert_eq!(ids(&client).await, [1, 2, 3]);

    // Update: take the parent from Tomato (both projects change); child 21, dropped from the
    // list, returns to the General Project.
    let updated = client
        .update_project(
            id,
            &ProjectRequest {
                name: Some("Rice and tomato".into()),
                datasets: Some(vec![33]),
                ..ProjectRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.name, "Rice and tomato");
    assert_eq!(updated.members.len(), 2, "members untouched when not sent");
    assert_eq!(dataset_uuids(&updated), [parent()]);
    let tomato = client.get_project(2).await.unwrap().unwrap();
    assert!(
        tomato.datasets.is_empty(),
        "the parent was stolen from Tomato"
    );
    assert_eq!(
        client
            .get_dataset(parent())
            .await
            .unwrap()
            .unwrap()
            .project_id,
        id
    );
    let general = client.get_project(1).await.unwrap().unwrap();
    assert!(dataset_uuids(&general).contains(&child_21()));
    assert_eq!(
        client
            .get_dataset(child_21())
            .await
            .unwrap()
            .unwrap()
            .project_id,
        1
    );

    // Delete: gone from list and detail; its datasets are back in the General Project.
    client.delete_project(id).await.unwrap();
    assert_eq!(client.get_project(id).await.unwrap(), None);
    assert_eq!(ids(&client).await, [1, 2]);
    let general = client.get_project(1).await.unwrap().unwrap();
    assert!(dataset_uuids(&general).contains(&parent()));
    assert_eq!(
        client
            .get_dataset(parent())
            .await
            .unwrap()
            .unwrap()
            .project_id,
        1
    );
    assert!(matches!(
        client.delete_project(id).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn web_ui_writes_are_refused_as_smrt_link_refuses_them() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let rename = ProjectRequest {
        name: Some("Mine now".into()),
        ..ProjectRequest::default()
    };
    assert!(matches!(
        client.update_project(1, &rename).await,
        Err(Error::Rejected { status: 403, .. })
    ));
    assert!(matches!(
        client.delete_project(1).await,
        Err(Error::Rejected { status: 403, .. })
    ));
    let duplicate = ProjectRequest {
        name: Some("Tomato".into()),
        ..ProjectRequest::default()
    };
    assert!(matches!(
        client.create_project(&duplicate).await,
        Err(Error::Rejected { status: 409, .. })
    ));
    let unknown = ProjectRequest {
        name: Some("X".into()),
        datasets: Some(vec![9999]),
        ..ProjectRequest::default()
    };
    assert!(matches!(
        client.create_project(&unknown).await,
        Err(Error::Rejected { status: 404, .. })
    ));
    assert!(matches!(
        client.update_project(77, &rename).await,
        Err(Error::NotFound { .. })
    ));
    // Nothing changed.
    assert_eq!(ids(&client).await, [1, 2]);
    assert_eq!(
        client.get_project(1).await.unwrap().unwrap().name,
        "General Project"
    );
    assert_eq!(
        dataset_uuids(&client.get_project(2).await.unwrap().unwrap()),
        [parent()]
    );
}

#[tokio::test]
async fn admin_changes_are_visible_through_the_client_without_notification() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let sl = &fx.standin;

    let id = sl
        .create_project(NewProject {
            name: "Wheat".into(),
            description: String::new(),
            members: vec![
                Member::new("admin", Role::Owner),
                Member::new("dave", Role::CanView),
            ],
            datasets: vec![child_20()],
        })
        .unwrap();
    let wheat = client.get_project(id).await.unwrap().unwrap();
    assert_eq!(dataset_uuids(&wheat), [child_20()]);

    sl.rename_project(id, "Wheat 2024").unwrap();
    sl.add_member(id, "erin", Role::CanEdit).unwrap();
    sl.add_member(id, "dave", Role::CanEdit).unwrap();
    sl.remove_member(id, "admin").unwrap();
    let wheat = client.get_project(id).await.unwrap().unwrap();
    assert_eq!(wheat.name, "Wheat 2024");
    let members: Vec<(&str, &Role)> = wheat
        .members
        .iter()
        .map(|m| (m.login.as_str(), &m.role))
        .collect();
    assert_eq!(
        members,
        [("dave", &Role::CanEdit), ("erin", &Role::CanEdit)]
    );
    let listed = client.list_projects().await.unwrap();
    assert!(listed.iter().any(|p| p.id == id && p.name == "Wheat 2024"));

    // Move the parent from Tomato: both projects change.
    sl.move_dataset(parent(), id).unwrap();
    assert!(
        client
            .get_project(2)
            .await
            .unwrap()
            .unwrap()
            .datasets
            .is_empty()
    );
    assert_eq!(
        dataset_uuids(&client.get_project(id).await.unwrap().unwrap()),
        [child_20(), parent()]
    );
    sl.remove_dataset(id, child_20()).unwrap();
    assert_eq!(
        dataset_uuids(&client.get_project(id).await.unwrap().unwrap()),
        [parent()]
    );
    assert!(dataset_uuids(&client.get_project(1).await.unwrap().unwrap()).contains(&child_20()));

    // Soft delete: still listed, inactive.
    sl.set_project_active(id, false).unwrap();
    let listed = client.list_projects().await.unwrap();
    assert!(listed.iter().any(|p| p.id == id && !p.is_active));

    sl.delete_project(id).unwrap();
    assert_eq!(client.get_project(id).await.unwrap(), None);
    assert!(sl.rename_project(1, "x").is_err());
    assert!(sl.delete_project(1).is_err());
}

#[tokio::test]
async fn the_admin_http_api_drives_the_same_state() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}admin/{path}", fx.standin.url());

    let created: serde_json::Value = http
        .post(admin("projects"))
        .json(&json!({"name": "Barley", "members": [{"login": "admin", "role": "OWNER"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_i64().unwrap();
    let put = http
        .put(admin(&format!("projects/{id}/members/frank")))
        .json(&json!({"role": "CAN_VIEW"}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let moved = http
        .put(admin(&format!("projects/{id}/datasets/{}", parent())))
        .send()
        .await
        .unwrap();
    assert!(moved.status().is_success());
    let renamed = http
        .patch(admin(&format!("projects/{id}")))
        .json(&json!({"name": "Barley 2"}))
        .send()
        .await
        .unwrap();
    assert!(renamed.status().is_success());

    let barley = client.get_project(id).await.unwrap().unwrap();
    assert_eq!(barley.name, "Barley 2");
    assert_eq!(
        barley
            .shared_members()
            .map(|m| m.login.as_str())
            .collect::<Vec<_>>(),
        ["frank"]
    );
    assert_eq!(dataset_uuids(&barley), [parent()]);
    assert!(
        client
            .get_project(2)
            .await
            .unwrap()
            .unwrap()
            .datasets
            .is_empty()
    );

    // Refusals carry SMRT Link's status.
    let refused = http.delete(admin("projects/1")).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let bad_role = http
        .put(admin(&format!("projects/{id}/members/g")))
        .json(&json!({"role": "KING"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_role.status(), 400);

    // Faults and counters over HTTP.
    let faults = http
        .put(admin("faults"))
        .json(&json!({"fail_next": 1, "error_status": 502, "endpoints": ["get_project"]}))
        .send()
        .await
        .unwrap();
    assert!(faults.status().is_success());
    client.get_project(id).await.unwrap().unwrap();
    let counters: serde_json::Value = http
        .get(admin("counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["injected_errors"], 1);
    assert!(counters["requests"]["get_project"].as_u64().unwrap() >= 3);

    let gone = http
        .delete(admin(&format!("projects/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert_eq!(client.get_project(id).await.unwrap(), None);
    let state: serde_json::Value = http
        .get(admin("state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["projects"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn web_ui_starts_analysis_jobs() {
    let Some(fx) = fixture().await else { return };
    let client = fx.client();
    let job = client
        .create_analysis_job(&AnalysisJobRequest {
            name: "Align tomato 20".into(),
            pipeline_id: "cromwell.workflows.pb_align_ccs".into(),
            project_id: Some(2),
            entry_points: vec![EntryPointRequest {
                entry_id: "eid_ccs".into(),
                file_type_id: "PacBio.DataSet.ConsensusReadSet".into(),
                dataset_id: child_20().to_string(),
            }],
            task_options: Vec::new(),
            workflow_options: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Created);
    assert_eq!(job.state.phase(), JobPhase::Pending);
    assert_eq!(job.project_id, 2);
    assert_eq!(fx.standin.count(Endpoint::CreateJob), 1);
    let listed = client.list_analysis_jobs(Some(2)).await.unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [job.id]);
    let inputs = client.analysis_job_entry_points(job.id).await.unwrap();
    assert_eq!(inputs[0].dataset_uuid, child_20());
    assert!(
        client
            .analysis_job_datastore(job.id)
            .await
            .unwrap()
            .is_empty()
    );
}
