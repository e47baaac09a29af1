//! The core guarantee: replaying a data set through the streaming engine gives exactly what
//! the same SQL gives as one batch query over the whole data set — for the shipped views and
//! for test views covering every supported shape, in small and large batches, in order and
//! shuffled within the watermark.

mod common;

use common::*;

async fn check(dir: &std::path::Path, queries: &std::path::Path, batches: &[usize]) {
    let defs = load_views(queries);
    let want = oracle(dir, &defs).await;
    for &b in batches {
        let out = tempfile::tempdir().unwrap();
        let got = replay(dir, &defs, b, out.path()).await;
        for d in &defs {
            let (g, w) = (&got[&d.name], &want[&d.name]);
            assert!(
                !w.is_empty(),
                "view {} is empty in the oracle: the data set does not exercise it",
                d.name
            );
            assert_same(&format!("{} (batch {b})", d.name), g, w);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_views_equal_batch() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 7, 60_000);
    check(data.path(), &root().join("queries"), &[97, 1000, 8192]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_views_equal_batch_out_of_order() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 11, 40_000);
    shuffle_within(data.path(), 2500, 3);
    check(data.path(), &root().join("queries"), &[250, 4096]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_views_equal_batch() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 5, 50_000);
    shuffle_within(data.path(), 2500, 9);
    check(data.path(), &root().join("tests/views"), &[64, 3000]).await;
}
