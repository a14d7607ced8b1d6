//! Answers always fit: an apply or removal whose full list of actions is larger than the message
//! limit still answers, listing the first actions and counting all of them, after doing the work.

use smrtshare_api::staging::v1 as pb;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_larger_than_the_message_limit_is_summarised() {
    let limit = 32 * 1024;
    let mut env = Env::with(|c| c.server.max_message_bytes = limit).await;
    let big = env.plain("r1/1_A01", "Rice-Cell1", 600);
    let answer = env.apply(request(2, "Project 2", vec![ds(&big)])).await;
    assert!(answer.complete);
    assert_eq!(answer.datasets[0].file_count, 600);
    // CREATE_DIRECTORY, 600 × LINK_FILE, PUBLISH_DIRECTORY for the dataset; the same two for the
    // project directory.
    assert_eq!(answer.actions_total, 604);
    assert!(
        !answer.actions.is_empty() && answer.actions.len() < 604,
        "{} listed",
        answer.actions.len()
    );
    let links = answer
        .action_counts
        .iter()
        .find(|c| c.kind == pb::ActionKind::LinkFile as i32)
        .unwrap();
    assert_eq!(
        (links.outcome, links.count),
        (pb::ActionOutcome::Done as i32, 600)
    );
    assert_eq!(
        answer.action_counts.iter().map(|c| c.count).sum::<u64>(),
        604
    );
    for file in &big.files {
        assert_linked(
            &env.root
                .join(&answer.datasets[0].path)
                .join(file.file_name().unwrap()),
            file,
        );
    }

    let removed = env.remove(2, false).await;
    assert!(removed.removed);
    assert_eq!(
        removed.actions_total, 602,
        "600 unlinks and two removed directories"
    );
    assert!(removed.actions.len() < 602);
    for file in &big.files {
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(file).unwrap()),
            1
        );
    }
}
