//! A stand-in seeded from `shared/fixtures/smrtlink`, its paths pointing at a temporary copy of
//! `tomatoes/`.

use std::path::{Path, PathBuf};

use smrtshare_common::Secret;
use smrtshare_smrtlink::SmrtLinkClient;
use smrtshare_smrtlink_standin::{Seed, StandIn, StandInOptions};
use smrtshare_testkit::tempfile::TempDir;
use uuid::Uuid;

pub const USER: &str = "admin";
pub const PASSWORD: &str = "pw-8f1c2d-never-logged";
pub const FIXTURE_PREFIX: &str = "/home/dnasc/smrtlink-container/data/L9j.pacb/";

/// The parent dataset in project 2 (`numChildren: 2`).
pub fn parent() -> Uuid {
    Uuid::parse_str("48a71a3e-c97c-43ea-ba41-8c2b31dd32b2").unwrap()
}

/// Child "Tomato 20" (bc1047), recorded in project 1.
pub fn child_20() -> Uuid {
    Uuid::parse_str("e950eeb9-b402-4776-84e1-9a9905aa781b").unwrap()
}

/// Child "Tomato 21" (bc1048), recorded in project 1.
pub fn child_21() -> Uuid {
    Uuid::parse_str("7626fccc-b141-49f9-8d30-39302efe8d6a").unwrap()
}

/// The barcode set listed in the General Project.
pub fn general_dataset() -> Uuid {
    Uuid::parse_str("b16188a2-249e-4f0e-fcca-7c2b9a307387").unwrap()
}

pub struct Fixture {
    pub standin: StandIn,
    /// The copy of `tomatoes/` the dataset paths point into.
    pub tomatoes: PathBuf,
    _dir: TempDir,
}

impl Fixture {
    /// A client with the test limits of [`StandIn::client_config`].
    pub fn client(&self) -> SmrtLinkClient {
        SmrtLinkClient::new(self.standin.client_config(USER, PASSWORD)).unwrap()
    }
}

/// The seeded stand-in, or `None` (skip) when the shared fixtures are missing outside CI.
pub async fn fixture() -> Option<Fixture> {
    fixture_with(|_| {}).await
}

pub async fn fixture_with(adjust: impl FnOnce(&mut StandInOptions)) -> Option<Fixture> {
    smrtshare_common::telemetry::init_for_tests();
    let fixtures = smrtshare_testkit::smrtlink_fixtures(Path::new(env!("CARGO_MANIFEST_DIR")))?;
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let tomatoes = dir.path().join("tomatoes");
    smrtshare_testkit::copy_tree(&fixtures.join("tomatoes"), &tomatoes).unwrap();
    let mut options = StandInOptions {
        seed: Some(
            Seed::new(&fixtures).rewrite(FIXTURE_PREFIX, format!("{}/", tomatoes.display())),
        ),
        users: vec![(USER.into(), Secret::new(PASSWORD))],
        ..StandInOptions::default()
    };
    adjust(&mut options);
    let standin = StandIn::start(options).await.unwrap();
    Some(Fixture {
        standin,
        tomatoes,
        _dir: dir,
    })
}

/// Project 2's answer as the stand-in serves it, for tests that bend it into odd shapes.
pub fn project_json(standin: &StandIn, id: i64) -> serde_json::Value {
    standin.state_json()["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
        .unwrap()
}

/// A GET as any SMRT Link client makes it (a fresh token, `X-User-ID`), answered raw: status and
/// JSON body (`Null` when the body is not JSON).
pub async fn raw_get(standin: &StandIn, path: &str) -> (u16, serde_json::Value) {
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!("{}token", standin.url()))
        .form(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .get(format!("{}{}", standin.api_url(), path))
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("X-User-ID", USER)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}
