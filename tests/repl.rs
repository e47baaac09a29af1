//! The REPL driven as a user drives it: the real binary in a pseudo-terminal (expectrl), over
//! the built-in generator; and the non-interactive mode from `-c` and from stdin.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use expectrl::{ControlCode, Eof, Expect, Regex, Session};

const BIN: &str = env!("CARGO_BIN_EXE_runnel");

/// A private copy of the shipped views (the REPL may save new ones there).
fn queries_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let q = dir.join("queries");
    std::fs::create_dir_all(&q).unwrap();
    for e in std::fs::read_dir(common::root().join("queries")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, q.join(p.file_name().unwrap())).unwrap();
    }
    q
}

fn number(caps: &expectrl::Captures) -> u64 {
    String::from_utf8_lossy(caps.get(1).expect("a number"))
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn interactive_prompt_over_the_live_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let queries = queries_copy(tmp.path());
    let history = tmp.path().join("history");
    let mut cmd = Command::new(BIN);
    cmd.args(["repl", "--rate", "3000"])
        .arg("--queries")
        .arg(&queries)
        .arg("--schemas")
        .arg(common::root().join("schemas"))
        .arg("--history")
        .arg(&history)
        .arg("--dead-letters")
        .arg(tmp.path().join("dl.ndjson"))
        .env("TERM", "xterm")
        .env("RUNNEL_LOG", "warn");
    let mut p = Session::spawn(cmd).expect("spawn in a pty");
    p.set_expect_timeout(Some(Duration::from_secs(30)));
    p.expect("runnel> ").unwrap();

    // A pull query twice: the live view has grown in between.
    std::thread::sleep(Duration::from_millis(1000));
    let q = "SELECT coalesce(sum(orders), 0) AS n FROM product_sales;";
    p.send_line(q).unwrap();
    let first = number(&p.expect(Regex(r"\| +(\d+) +\|")).unwrap());
    p.expect("1 row").unwrap();
    p.expect("runnel> ").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    p.send_line(q).unwrap();
    let second = number(&p.expect(Regex(r"\| +(\d+) +\|")).unwrap());
    p.expect("runnel> ").unwrap();
    assert!(second > first, "orders did not grow: {first} then {second}");

    // A push query refreshes until Ctrl-C, which returns to the prompt; the pipeline goes on.
    p.send_line("\\watch 0.2 SELECT count(*) AS c FROM transactions;")
        .unwrap();
    p.expect("Ctrl-C to stop").unwrap();
    p.expect("Ctrl-C to stop").unwrap();
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("stopped watching").unwrap();
    p.expect("runnel> ").unwrap();
    p.send_line("SELECT count(*) AS c FROM transactions EMIT CHANGES;")
        .unwrap();
    p.expect("Ctrl-C to stop").unwrap();
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("stopped watching").unwrap();
    p.expect("runnel> ").unwrap();

    // Tab completes a table name.
    p.send("SELECT count(*) AS c FROM transac").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p.send("\t").unwrap();
    p.expect("transactions").unwrap();
    p.send_line(";").unwrap();
    p.expect("1 row").unwrap();
    p.expect("runnel> ").unwrap();

    // A syntax error and an unknown column: clear messages, and the prompt stays.
    p.send_line("SELEC 1;").unwrap();
    p.expect(Regex("ParserError.*Line: 1, Column: 1")).unwrap();
    p.expect("runnel> ").unwrap();
    p.send_line("SELECT no_such_column FROM transactions;")
        .unwrap();
    p.expect("No field named no_such_column").unwrap();
    p.expect("runnel> ").unwrap();

    // A multi-line statement ends at `;`.
    p.send_line("SELECT 40 + 2").unwrap();
    p.expect("...> ").unwrap();
    p.send_line("AS answer;").unwrap();
    p.expect(Regex(r"\| +42 +\|")).unwrap();
    p.expect("runnel> ").unwrap();

    // A temporary view, watched as data arrives, then saved as a view file.
    p.send_line(
        "CREATE VIEW big_orders AS SELECT product_id, count(*) AS n FROM transactions WHERE quantity >= 3 GROUP BY product_id;",
    )
    .unwrap();
    p.expect("temporary view big_orders created").unwrap();
    p.expect("it sees events from now on").unwrap();
    p.expect("runnel> ").unwrap();
    // A view over a table is computed at once from the table's current rows.
    p.send_line(
        "CREATE VIEW by_gender AS SELECT gender, count(*) AS n FROM customers GROUP BY gender;",
    )
    .unwrap();
    p.expect("computed from the current rows").unwrap();
    p.expect("runnel> ").unwrap();
    p.send_line("SELECT sum(n) AS n FROM by_gender;").unwrap();
    let n = number(&p.expect(Regex(r"\| +(\d+) +\|")).unwrap());
    assert!(n > 0, "the view over customers is empty");
    p.expect("runnel> ").unwrap();
    std::thread::sleep(Duration::from_millis(800));
    p.send_line("SELECT sum(n) AS n FROM big_orders;").unwrap();
    let n = number(&p.expect(Regex(r"\| +(\d+) +\|")).unwrap());
    assert!(n > 0, "the temporary view saw nothing");
    p.expect("runnel> ").unwrap();
    p.send_line("\\d").unwrap();
    p.expect("temporary view").unwrap();
    p.expect("runnel> ").unwrap();
    p.send_line("\\d products").unwrap();
    p.expect(Regex("stock_quantity +Int64")).unwrap();
    p.expect("runnel> ").unwrap();
    p.send_line("\\plan product_sales").unwrap();
    p.expect("incremental aggregate over stream transactions")
        .unwrap();
    p.expect("runnel> ").unwrap();
    p.send_line("\\status").unwrap();
    p.expect(Regex("transactions +[0-9]+")).unwrap();
    p.expect("runnel> ").unwrap();
    p.send_line("\\save big_orders").unwrap();
    p.expect("saved").unwrap();
    p.expect("runnel> ").unwrap();

    p.send_line("\\q").unwrap();
    p.expect(Eof).unwrap();
    let saved = std::fs::read_to_string(queries.join("big_orders.sql")).unwrap();
    assert!(saved.contains("WHERE quantity >= 3"), "{saved}");
    // The saved file is a valid view.
    let check = Command::new(BIN)
        .arg("check")
        .arg("--queries")
        .arg(&queries)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let hist = std::fs::read_to_string(&history).unwrap();
    assert!(hist.contains("AS n FROM product_sales;"), "{hist}");
}

#[test]
fn statements_from_c_and_from_stdin_run_over_a_drained_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    common::generate(&data, 8, 20_000);
    let base = |cmd: &mut Command| {
        cmd.args(["repl", "--source"])
            .arg(format!("files:{}", data.display()))
            .arg("--queries")
            .arg(common::root().join("queries"))
            .arg("--dead-letters")
            .arg(tmp.path().join("dl.ndjson"))
            .env("RUNNEL_LOG", "warn");
    };
    // The replay's ~6,000 transactions fit in the stream's window (10,000 recent events per
    // stream by default), so the count matches the file.
    let in_file = std::fs::read_to_string(data.join("transaction_data.ndjson"))
        .unwrap()
        .lines()
        .count();
    let mut cmd = Command::new(BIN);
    base(&mut cmd);
    let o = cmd
        .arg("-c")
        .arg("\\format csv\nSELECT count(*) AS n FROM transactions; SELECT count(*) AS k FROM top_sellers;")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["n", &in_file.to_string(), "k", "10"],
        "{out}"
    );
    // From stdin, with an error in the middle: reported, the rest still runs, exit code 1.
    let mut cmd = Command::new(BIN);
    base(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"\\format json\nSELECT nope FROM products;\nSELECT count(*) AS n FROM products;\n",
        )
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("No field named nope"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(r#"{"n":"#), "{out}");
    // The stream window is bounded by --repl-window; \sql and \? answer.
    let mut cmd = Command::new(BIN);
    base(&mut cmd);
    let o = cmd
        .args(["--repl-window", "100", "-c"])
        .arg("\\format csv\nSELECT count(*) AS n FROM transactions;\n\\sql product_sales\n\\?")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(out.starts_with("n\n100\n"), "{out}");
    assert!(out.contains("sum(quantity)"), "{out}");
    assert!(out.contains("Statements end with"), "{out}");
    // EXPLAIN shows DataFusion's plans.
    let mut cmd = Command::new(BIN);
    base(&mut cmd);
    let o = cmd
        .arg("-c")
        .arg("EXPLAIN SELECT count(*) FROM transactions;")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{o:?}");
    assert!(
        out.contains("logical_plan") && out.contains("physical_plan"),
        "{out}"
    );
}
