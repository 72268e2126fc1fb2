//! The readers and the category classifier on the real benchmark files in
//! `shared/data/vqa` (read at test time through `common::vqa_dir`, never copied).

mod common;

use std::collections::BTreeMap;

use medpo_eval::bench::{read_vqa, AnswerType, QuestionId, VqaBenchmark};
use medpo_eval::category::{classify, Category, ALL};

fn counts(bench: &str) -> (usize, usize, usize, Vec<usize>) {
    let b = VqaBenchmark::load(bench, &common::vqa_dir()).expect("benchmark");
    let closed = b.items.iter().filter(|i| i.answer_type == AnswerType::Closed).count();
    let with_image = b.items.iter().filter(|i| i.had_image_token).count();
    let mut per: BTreeMap<Category, usize> = BTreeMap::new();
    for it in &b.items {
        *per.entry(classify(&it.question)).or_default() += 1;
    }
    let per = ALL.iter().map(|c| per.get(c).copied().unwrap_or(0)).collect();
    (b.items.len(), closed, with_image, per)
}

/// Category counts of protocol `medpo-eval/1`, in the order of `category::ALL`:
/// count, colour, modality, plane, organ, position, size, abnormality, other.
/// A change here is a protocol change: bump `PROTOCOL_VERSION` and the docs.
#[test]
fn category_counts_are_pinned() {
    assert_eq!(counts("vqa-rad"), (451, 272, 451, vec![2, 0, 43, 26, 11, 75, 37, 190, 67]));
    assert_eq!(counts("slake"), (1061, 416, 0, vec![52, 32, 103, 58, 329, 119, 26, 282, 60]));
    assert_eq!(counts("pathvqa"), (6719, 3362, 6718, vec![25, 56, 136, 4, 12, 497, 165, 5286, 538]));
}

#[test]
fn train_files_quirks_are_read() {
    let dir = common::vqa_dir();
    // VQA-RAD train: two "CLOSED " with a space, one string question id "0", numeric golds.
    let rad = read_vqa(&dir.join("VQA_RAD_train_llavamed_format.jsonl")).unwrap();
    assert_eq!(rad.len(), 1797);
    assert_eq!(rad.iter().filter(|i| i.raw_answer_type == "CLOSED ").count(), 2);
    assert_eq!(rad.iter().filter(|i| i.answer_type == AnswerType::Closed).count(), 1027);
    assert!(rad.iter().any(|i| i.question_id == QuestionId::Str("0".into())));
    // PathVQA train: "Open"/"Closed", string ids like "train0_0".
    let pv = read_vqa(&dir.join("pvqa_train_llavamed_format.jsonl")).unwrap();
    assert_eq!(pv.len(), 19654);
    assert_eq!(pv.iter().filter(|i| i.answer_type == AnswerType::Open).count(), 9903);
    // SLAKE train has <image>, SLAKE test does not.
    let sl = read_vqa(&dir.join("SLAKE_train_llavamed_format.jsonl")).unwrap();
    assert_eq!(sl.len(), 4919);
    // The odd first PathVQA test record has no <image>; its prompt still gets one.
    let test = VqaBenchmark::load("pathvqa", &dir).unwrap();
    assert!(!test.items[0].had_image_token);
    assert!(test.items[0].prompt().starts_with("<image>\nCan you describe"));
}
