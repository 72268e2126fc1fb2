//! LLaVA-Med's scoring rules (the seed-compatible protocol variant) against ours, one test per
//! rule, on the real test files in `shared/data/vqa`.

mod common;

use medpo_eval::bench::{AnswerType, VqaBenchmark, VqaItem};
use medpo_eval::bootstrap_ci::BootstrapConfig;
use medpo_eval::closed_accuracy::{judge_closed, ClosedVerdict};
use medpo_eval::leaderboard::leaderboards;
use medpo_eval::llava_med;
use medpo_eval::open_recall::open_recall;
use medpo_eval::protocol::Protocol;
use medpo_eval::score::score_run;

fn bench(name: &str) -> VqaBenchmark {
    VqaBenchmark::load(name, &common::vqa_dir()).unwrap()
}

use common::answers;

fn cfg() -> BootstrapConfig {
    BootstrapConfig { rounds: 200, ..Default::default() }
}

fn is(gold: &str, word: &str) -> bool {
    gold.trim().trim_end_matches('.').eq_ignore_ascii_case(word)
}

/// Closed rule: the gold is a substring of the prediction. A hedged answer that says neither
/// yes nor no ("abnormal", "cannot") is right for every "no" gold under LLaVA-Med's rule and
/// unparsed (wrong) under ours; a "yes" gold is wrong under both.
#[test]
fn closed_gold_no_is_a_substring_of_hedged_answers() {
    let hedge = "It looks abnormal, but I cannot say for certain.";
    for name in ["vqa-rad", "slake", "pathvqa"] {
        let b = bench(name);
        let closed: Vec<&VqaItem> = b.items.iter().filter(|i| i.answer_type == AnswerType::Closed).collect();
        let (mut no, mut yes) = (0, 0);
        for it in &closed {
            if is(&it.answer, "no") {
                no += 1;
                assert!(llava_med::closed_correct(hedge, &it.answer), "{name} {:?}", it.question_id);
                assert_eq!(judge_closed(hedge, &it.answer), ClosedVerdict::Unparsed);
            } else if is(&it.answer, "yes") {
                yes += 1;
                assert!(!llava_med::closed_correct(hedge, &it.answer));
                assert_eq!(judge_closed(hedge, &it.answer), ClosedVerdict::Unparsed);
            }
        }
        assert!(no > 0 && yes > 0, "{name}: {no} no, {yes} yes");

        let run = score_run(&b, &answers(&b, "hedger", |_| hedge.into()), "hedger", &cfg()).unwrap();
        let ours = run.metric("closed/accuracy").unwrap().value;
        let theirs = run.metric("llava-med/closed/accuracy").unwrap().value;
        // Every "no" gold counts under LLaVA-Med's rule (plus any pick-one gold that happens
        // to be a substring of the hedge); nothing yes/no counts under ours.
        assert!(theirs >= no as f64 / closed.len() as f64, "{name}: {theirs}");
        assert!(ours <= (closed.len() - no - yes) as f64 / closed.len() as f64, "{name}: {ours}");
        assert!(theirs - ours > 0.3, "{name}: the lenient rule explains {:.1} points", 100.0 * (theirs - ours));
    }
}

/// Normalisation: LLaVA-Med maps "none" to "0" before comparing. So "None." never answers a
/// "no" gold under its rule (nor under ours), and it fully answers SLAKE's count questions
/// whose gold is "0" under its rule, where ours gives no credit.
#[test]
fn none_is_read_as_zero() {
    let rad = bench("vqa-rad");
    let nos: Vec<&VqaItem> = rad.items.iter().filter(|i| i.answer_type == AnswerType::Closed && is(&i.answer, "no")).collect();
    assert!(!nos.is_empty());
    for it in &nos {
        assert!(!llava_med::closed_correct("None.", &it.answer), "{:?}", it.question_id);
        assert_ne!(judge_closed("None.", &it.answer), ClosedVerdict::Correct);
    }
    let slake = bench("slake");
    let zeros: Vec<&VqaItem> = slake.items.iter().filter(|i| i.answer_type == AnswerType::Open && i.answer.trim() == "0").collect();
    assert!(!zeros.is_empty(), "SLAKE has count questions answered 0");
    for it in &zeros {
        assert_eq!(llava_med::open_recall("None.", &it.answer), 1.0, "{:?}", it.question_id);
        assert_eq!(open_recall("None.", &it.answer), 0.0);
    }
}

/// Open rule: recall is `tp / (tp + fn)` with `tp` counted from the prediction. It never
/// exceeds 1, an exact answer scores 1 under both protocols, and when a gold repeats a word
/// ("Medical therapy, supportive therapy") a prediction naming that word once counts it once,
/// so the denominator shrinks: 1/3 where clipped recall over the gold's 4 tokens gives 1/4.
#[test]
fn open_recall_counts_from_the_prediction() {
    for name in ["vqa-rad", "slake", "pathvqa"] {
        let b = bench(name);
        for it in b.items.iter().filter(|i| i.answer_type == AnswerType::Open) {
            let exact = llava_med::open_recall(&it.answer, &it.answer);
            let doubled = llava_med::open_recall(&format!("{0} {0}", it.answer), &it.answer);
            let words = llava_med::normalize_word(&it.answer);
            if words.is_empty() {
                continue;
            }
            assert_eq!(exact, 1.0, "{name} {:?}: {}", it.question_id, it.answer);
            assert_eq!(doubled, 1.0, "{name} {:?}", it.question_id);
            let first = words.split(' ').next().unwrap();
            let r = llava_med::open_recall(&format!("{first} {first} {first}"), &it.answer);
            assert!((0.0..=1.0).contains(&r), "{name} {:?}: {r}", it.question_id);
        }
    }
    let slake = bench("slake");
    let it = slake.items.iter().find(|i| i.answer == "Medical therapy, supportive therapy").unwrap();
    assert!((llava_med::open_recall("therapy", &it.answer) - 1.0 / 3.0).abs() < 1e-12);
    assert!((open_recall("therapy", &it.answer) - 1.0 / 4.0).abs() < 1e-12);
    // Repeating a matched word in the prediction outweighs the missed gold words.
    let lung = slake.items.iter().find(|i| i.answer == "Lung, Spinal Cord").unwrap();
    assert!((llava_med::open_recall("lung lung lung", &lung.answer) - 3.0 / 5.0).abs() < 1e-12);
    assert!((open_recall("lung lung lung", &lung.answer) - 1.0 / 3.0).abs() < 1e-12);
}

/// Both protocols are in every summary; a leaderboard ranks by the one asked for, and a
/// summary written before the variant existed is refused under it with a clear message.
#[test]
fn leaderboards_rank_under_either_protocol() {
    let b = bench("vqa-rad");
    // Open questions get no answer from either model, so closed questions decide. The
    // yes-sayer is right on every "yes" gold under both rules; the hedger says neither yes
    // nor no: worthless under ours, right on every "no" gold under LLaVA-Med's. The ranking
    // flips.
    let reply = |text: &'static str| move |it: &VqaItem| if it.answer_type == AnswerType::Closed { text.into() } else { String::new() };
    let yes = score_run(&b, &answers(&b, "yes-sayer", reply("Yes.")), "yes-sayer", &cfg()).unwrap();
    let hedger = score_run(&b, &answers(&b, "hedger", reply("abnormal, cannot say")), "hedger", &cfg()).unwrap();
    let runs = [yes.clone(), hedger.clone()];
    let ours = leaderboards(&runs, Some("yes-sayer"), &cfg(), Protocol::Medpo).unwrap();
    let theirs = leaderboards(&runs, Some("yes-sayer"), &cfg(), Protocol::LlavaMed).unwrap();
    assert_eq!((ours[0].ranked_by, theirs[0].ranked_by), (Protocol::Medpo, Protocol::LlavaMed));
    assert_eq!(ours[0].order, [0, 1], "the yes-sayer leads under ours");
    assert_eq!(theirs[0].order, [1, 0], "the hedger leads under LLaVA-Med's rule");

    let closed = b.items.iter().filter(|i| i.answer_type == AnswerType::Closed);
    let n_yes = closed.clone().filter(|i| is(&i.answer, "yes")).count() as u64;
    let n_no = closed.filter(|i| is(&i.answer, "no")).count() as u64;
    // McNemar of the hedger (the run) against the yes-sayer (the baseline).
    let mc = |boards: &[medpo_eval::leaderboard::Leaderboard]| {
        let pos = boards[0].order.iter().position(|&i| i == 1).unwrap();
        boards[0].comparisons[pos].as_ref().unwrap().closed_mcnemar.unwrap()
    };
    let (m_ours, m_theirs) = (mc(&ours), mc(&theirs));
    assert_eq!(m_ours.b_only, n_yes, "under ours only the yes-sayer is ever right on yes/no");
    // Under ours the hedger is right only where a pick-one gold ("abnormal") is in its words.
    let pick_one_hits = b
        .items
        .iter()
        .filter(|i| i.answer_type == AnswerType::Closed && !is(&i.answer, "yes") && !is(&i.answer, "no"))
        .filter(|i| judge_closed("abnormal, cannot say", &i.answer) == ClosedVerdict::Correct)
        .count() as u64;
    assert_eq!(m_ours.a_only, pick_one_hits);
    assert!(m_theirs.a_only > n_no / 2 + m_ours.a_only);
    assert_eq!(m_theirs.b_only, n_yes);
    assert!(m_theirs.a_only >= n_no, "every no gold is a substring of the hedge");

    let mut old = hedger.clone();
    for i in &mut old.items {
        i.llava_med_score = None;
    }
    let e = leaderboards(&[yes, old], None, &cfg(), Protocol::LlavaMed).unwrap_err().to_string();
    assert!(e.contains("llava-med") && e.contains("score-answers"), "{e}");
}
