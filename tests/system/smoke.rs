use smrtshare_tests::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_starts_and_stages_the_demo_projects() {
    let stack = Stack::start(StackOptions::default()).await.unwrap();
    let expected = smrtshare_tests::world::expected(&stack).await.unwrap();
    eprintln!("{expected:#?}");
    assert_eq!(expected.len(), 3);
}
